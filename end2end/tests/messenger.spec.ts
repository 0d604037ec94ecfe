// Continue on Messenger, end to end: the visitor moves the chat to (the sandbox's) Messenger, writes there, and the
// agent sees one conversation and answers once; the reply reaches Messenger and the widget.
import { test, expect } from '@playwright/test';
import { agentOpens, agentReplies, openChat, signInAgent, unique, visitHostPage, visitorSends } from './fixtures';

test('a web chat continues on Messenger as one conversation', async ({ browser }) => {
  const visitor = await visitHostPage(browser);
  await openChat(visitor);
  const first = unique('Can I change my delivery address?');
  await visitorSends(visitor, first);

  // "Continue on Messenger" opens the (sandbox) m.me page in a new tab.
  const [messenger] = await Promise.all([
    visitor.context.waitForEvent('page'),
    visitor.chat.getByRole('link', { name: 'Continue on Messenger' }).click(),
  ]);
  await messenger.getByRole('button', { name: 'Get Started' }).click();
  // The Page asks first: nothing is linked until the customer says yes in Messenger.
  await messenger.getByRole('button', { name: 'Yes, continue here' }).click();
  const thread = messenger.getByRole('log');
  // The customer gets a recap of the web conversation there.
  await expect(thread).toContainText(first);
  await expect(visitor.chat.getByText(/Continued on Messenger as \S+\./)).toBeVisible();

  const fromMessenger = unique('Written in Messenger');
  await messenger.getByRole('textbox', { name: 'Message' }).fill(fromMessenger);
  await messenger.getByRole('button', { name: 'Send' }).click();
  await expect(visitor.chat.getByRole('log')).toContainText(fromMessenger);

  const agent = await signInAgent(browser);
  await agentOpens(agent, fromMessenger);
  await expect(agent.getByRole('log')).toContainText(first);
  // Before typing, the agent sees that the Messenger window is open and how long for.
  await expect(agent.getByText(/Messenger reply window: Open, .* left/)).toBeVisible();
  const reply = unique('Yes, I changed it for you.');
  await agentReplies(agent, reply);
  await expect(thread).toContainText(reply);
  await expect(visitor.chat.getByRole('log')).toContainText(reply);
  // The reply's Messenger delivery shows in the widget and the console.
  await expect(visitor.chat.getByText(/(Sent to|Delivered on|Seen on) Messenger/).first()).toBeVisible();
  await expect(agent.getByText(/(Sent|Delivered|Read) on Messenger/).first()).toBeVisible();

  await visitor.context.close();
  await agent.context().close();
});
