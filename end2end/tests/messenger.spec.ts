// Continue on Messenger, end to end: the visitor moves the chat to (the sandbox's) Messenger, writes there, and the
// agent sees one conversation and answers once; the reply reaches Messenger and the widget. The link is asked for
// on the visitor's click only (asking creates the contact), still in one click, with a plain link where the
// browser blocks the window.
import { test, expect, type Browser } from '@playwright/test';
import {
  HOST_ORIGIN,
  agentOpens,
  agentReplies,
  countRows,
  inChatFrame,
  openChat,
  signInAgent,
  unique,
  visitHostPage,
  visitorSends,
  type Visitor,
} from './fixtures';

test('a web chat continues on Messenger as one conversation', async ({ browser }) => {
  const visitor = await visitHostPage(browser);
  await openChat(visitor);
  const first = unique('Can I change my delivery address?');
  await visitorSends(visitor, first);

  // "Continue on Messenger" opens the (sandbox) m.me page in a new window.
  const [messenger] = await Promise.all([
    visitor.context.waitForEvent('page'),
    visitor.chat.getByRole('button', { name: 'Continue on Messenger' }).click(),
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

/** A visitor on the host page whose chat frames (sent and received, by `type`) are recorded from the first socket. */
async function watchedVisitor(browser: Browser) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const page = await context.newPage();
  const sent: string[] = [];
  const received: string[] = [];
  const type = (payload: string | Buffer) => {
    try {
      return String(JSON.parse(String(payload)).type);
    } catch {
      return '?';
    }
  };
  page.on('websocket', (ws) => {
    if (!ws.url().includes('/ws/visitor')) return;
    ws.on('framesent', (f) => sent.push(type(f.payload)));
    ws.on('framereceived', (f) => received.push(type(f.payload)));
  });
  await page.goto(`${HOST_ORIGIN}/`);
  const visitor: Visitor = { context, page, chat: page.frameLocator('iframe[title="Chat"]') };
  return { visitor, sent, received };
}

test('opening the chat asks for no Messenger link; "Continue on Messenger" does, in one click', async ({ browser }) => {
  const tables = ['contacts', 'conversations', 'messenger_links'] as const;
  const before = tables.map(countRows);
  const { visitor, sent, received } = await watchedVisitor(browser);
  await openChat(visitor);
  await expect.poll(() => received.includes('welcome')).toBe(true);
  // The visitor idles: types a little and clears it. Frames go out in order, so a link asked for on the welcome or
  // after the jar check would be sent before this typing frame.
  const composer = visitor.chat.getByRole('textbox', { name: 'Type a message' });
  await composer.fill('hm');
  await expect.poll(() => sent.includes('typing')).toBe(true);
  await composer.fill('');
  // Asking for a link is what creates the contact (server/tests/api/visitor_session.rs): nothing was asked.
  expect(sent).not.toContain('messenger_link');
  expect(received).not.toContain('messenger_link');
  expect(tables.map(countRows), 'opening the chat wrote a contact, conversation or link').toEqual(before);
  await expect(visitor.chat.getByRole('button', { name: 'Continue on Messenger' })).toBeVisible();

  const [messenger] = await Promise.all([
    visitor.context.waitForEvent('page'),
    visitor.chat.getByRole('button', { name: 'Continue on Messenger' }).click(),
  ]);
  await expect(messenger).toHaveURL(/\/m\.me\//);
  expect(sent.filter((t) => t === 'messenger_link')).toHaveLength(1);
  // The click created the contact and its link (the conversation comes with the first message).
  expect(countRows('contacts')).toBe(before[0] + 1);
  expect(countRows('messenger_links')).toBeGreaterThan(before[2]);
  await messenger.getByRole('button', { name: 'Get Started' }).click();
  await messenger.getByRole('button', { name: 'Yes, continue here' }).click();
  await expect(visitor.chat.getByText(/Continued on Messenger as \S+\./)).toBeVisible();
  const fromMessenger = unique('First words, on Messenger');
  await messenger.getByRole('textbox', { name: 'Message' }).fill(fromMessenger);
  await messenger.getByRole('button', { name: 'Send' }).click();
  await expect(visitor.chat.getByRole('log')).toContainText(fromMessenger);
  await visitor.context.close();
});

test('where the browser blocks the window, "Continue on Messenger" becomes a link to click', async ({ browser }) => {
  const { visitor, sent } = await watchedVisitor(browser);
  await openChat(visitor);
  // A pop-up blocker: `window.open` in the chat frame opens nothing.
  await inChatFrame(visitor, () => {
    window.open = () => null;
  });
  await visitor.chat.getByRole('button', { name: 'Continue on Messenger' }).click();
  const link = visitor.chat.getByRole('link', { name: 'Continue on Messenger' });
  await expect(link).toHaveAttribute('href', /ref=/);
  await expect(link).toBeFocused();
  await expect(visitor.chat.getByRole('button', { name: 'Continue on Messenger' })).toHaveCount(0);
  await expect(visitor.chat.getByText(/Send us the code/)).toBeVisible();
  expect(sent.filter((t) => t === 'messenger_link')).toHaveLength(1);
  const [messenger] = await Promise.all([visitor.context.waitForEvent('page'), link.click()]);
  await messenger.getByRole('button', { name: 'Get Started' }).click();
  await messenger.getByRole('button', { name: 'Yes, continue here' }).click();
  await expect(visitor.chat.getByText(/Continued on Messenger as \S+\./)).toBeVisible();
  await visitor.context.close();
});
