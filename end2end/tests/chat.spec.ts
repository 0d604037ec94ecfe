// The web chat end to end: a customer's page on another origin embeds the widget with one script tag, a visitor
// writes, an agent answers live from the console, and nothing is lost or doubled across reloads and cut sockets.
import { test, expect } from '@playwright/test';
import {
  CHAT_ORIGIN,
  HOST_ORIGIN,
  agentOpens,
  agentReplies,
  inChatFrame,
  openChat,
  signInAgent,
  unique,
  visitHostPage,
  visitorSends,
} from './fixtures';

test('the loader draws the launcher and connects nothing until the visitor shows intent', async ({ browser }) => {
  const visitor = await visitHostPage(browser);
  const sockets: string[] = [];
  visitor.page.on('websocket', (ws) => sockets.push(ws.url()));
  await expect(visitor.page.getByRole('button', { name: 'Open chat' })).toBeVisible();
  await expect(visitor.page.locator('iframe[title="Chat"]')).toHaveCount(0);
  expect(sockets).toEqual([]);
  // No cookie and no storage on the host page.
  expect(await visitor.context.cookies(HOST_ORIGIN)).toEqual([]);
  expect(await visitor.page.evaluate(() => localStorage.length + sessionStorage.length)).toBe(0);
  await visitor.context.close();
});

test('a visitor and an agent chat live across origins', async ({ browser }) => {
  const visitor = await visitHostPage(browser);
  await openChat(visitor);
  await expect(visitor.chat.getByRole('log')).toContainText('Ask us anything');
  const question = unique('Do you ship to Norway?');
  await visitorSends(visitor, question);
  await expect(visitor.chat.getByText('Sent').or(visitor.chat.getByText('Read')).first()).toBeVisible();

  const agent = await signInAgent(browser);
  await agentOpens(agent, question);
  // The agent read it: the visitor's message turns to "Read".
  await expect(visitor.chat.getByText('Read').first()).toBeVisible();
  // Visitor details: the page they are on, the browser, their local time.
  await expect(agent.getByRole('link', { name: `${HOST_ORIGIN}/` })).toBeVisible();
  await expect(agent.getByText(/Chrome.* on Linux/)).toBeVisible();
  await expect(agent.getByText('Local time')).toBeVisible();

  // Typing indicators both ways.
  await visitor.chat.getByRole('textbox', { name: 'Type a message' }).pressSequentially('Also', { delay: 20 });
  await expect(agent.getByText('Visitor is typing…')).toBeVisible();
  await agent.getByRole('textbox', { name: 'Reply' }).pressSequentially('Yes', { delay: 20 });
  await expect(visitor.chat.getByText(/is typing…/)).toBeVisible();

  const answer = unique('Yes, we ship to Norway in 3 days.');
  await agentReplies(agent, answer);
  await expect(visitor.chat.getByRole('log')).toContainText(answer);
  await expect(visitor.chat.getByRole('log')).toContainText('Dana (demo agent)');

  // Shift+Enter makes a new line instead of sending.
  const composer = visitor.chat.getByRole('textbox', { name: 'Type a message' });
  await composer.fill('line one');
  await composer.press('Shift+Enter');
  await composer.pressSequentially('line two');
  await expect(composer).toHaveValue('line one\nline two');
  await composer.press('Enter');
  await expect(agent.getByRole('log')).toContainText('line two');

  // Resolve and reopen.
  await agent.getByRole('button', { name: 'Resolve' }).click();
  await expect(agent.getByRole('button', { name: 'Reopen' })).toBeVisible();
  await expect(visitor.chat.getByText('This conversation was marked as resolved.')).toBeVisible();
  await agent.getByRole('button', { name: 'Reopen' }).click();
  await expect(agent.getByRole('button', { name: 'Resolve' })).toBeVisible();

  // Visitor text is rendered as text, never as HTML.
  const hostile = `<img src=x onerror="document.title='pwned'"> ${unique('tag')}`;
  await visitorSends(visitor, hostile);
  await expect(agent.getByRole('log')).toContainText(hostile);
  expect(await agent.title()).not.toBe('pwned');
  await expect(agent.locator('img[src="x"]')).toHaveCount(0);

  await visitor.context.close();
  await agent.context().close();
});

test('the conversation is back after the host page (on another site) reloads, and later replies reach it', async ({
  browser,
}) => {
  const visitor = await visitHostPage(browser);
  await openChat(visitor);
  // The frame really is a third party here: the browser refuses it localStorage.
  expect(await inChatFrame(visitor, () => {
    try {
      return String(localStorage.length);
    } catch (e) {
      return (e as Error).name;
    }
  })).toBe('SecurityError');
  const first = unique('My order is late');
  await visitorSends(visitor, first);
  const agent = await signInAgent(browser);
  await agentOpens(agent, first);
  const reply = unique('Sorry! Checking now.');
  await agentReplies(agent, reply);
  await expect(visitor.chat.getByRole('log')).toContainText(reply);

  await visitor.page.reload();
  await openChat(visitor);
  const log = visitor.chat.getByRole('log');
  await expect(log).toContainText(first);
  await expect(log).toContainText(reply);
  await expect(log.getByText(first, { exact: true })).toHaveCount(1);
  await expect(log.getByText(reply, { exact: true })).toHaveCount(1);
  // A reply written after the reload reaches the reloaded page, and so does the visitor's next message the agent.
  const later = unique('Found it: it ships tomorrow.');
  await agentReplies(agent, later);
  await expect(log).toContainText(later);
  const thanks = unique('Thanks!');
  await visitorSends(visitor, thanks);
  await expect(agent.getByRole('log')).toContainText(thanks);
  await visitor.context.close();
  await agent.context().close();
});

test('a cut socket resumes with nothing lost and nothing doubled', async ({ browser }) => {
  const visitor = await visitHostPage(browser);
  // Route the widget's socket through the test so it can be cut like a dropped network.
  let blocked = false;
  const live: { close: (o?: { code?: number; reason?: string }) => Promise<void> }[] = [];
  await visitor.context.routeWebSocket(/\/ws\/visitor/, (ws) => {
    if (blocked) {
      void ws.close({ code: 4000, reason: 'network down' });
      return;
    }
    ws.connectToServer();
    live.push(ws);
  });
  await openChat(visitor);
  const before = unique('Before the cut');
  await visitorSends(visitor, before);
  const agent = await signInAgent(browser);
  await agentOpens(agent, before);

  blocked = true;
  for (const ws of live.splice(0)) await ws.close({ code: 4000, reason: 'network down' });

  const during = unique('Written while offline');
  const composer = visitor.chat.getByRole('textbox', { name: 'Type a message' });
  await composer.fill(during);
  await composer.press('Enter');
  await expect(visitor.chat.getByText('Sending…')).toBeVisible();
  const reply = unique('Answered while you were away');
  await agentReplies(agent, reply);

  blocked = false;
  const log = visitor.chat.getByRole('log');
  await expect(log).toContainText(reply, { timeout: 45_000 });
  await expect(agent.getByRole('log')).toContainText(during);
  await expect(visitor.chat.getByText('Sending…')).toHaveCount(0);
  for (const text of [before, during, reply]) {
    await expect(log.getByText(text, { exact: true })).toHaveCount(1);
    await expect(agent.getByRole('log').getByText(text, { exact: true })).toHaveCount(1);
  }
  await visitor.context.close();
  await agent.context().close();
});

test('the host page API opens the chat, and unread replies show on the launcher', async ({ browser }) => {
  const visitor = await visitHostPage(browser);
  await expect(visitor.page.locator('#host-events')).toContainText('ready');
  await visitor.page.getByRole('button', { name: 'Ask a question' }).click(); // calls Parley('open')
  const composer = visitor.chat.getByRole('textbox', { name: 'Type a message' });
  await expect(composer).toBeVisible();
  const question = unique('Is there a discount?');
  await visitorSends(visitor, question);
  await visitor.page.evaluate(() => (window as unknown as { Parley: (c: string) => void }).Parley('close'));
  await expect(composer).toBeHidden();

  const agent = await signInAgent(browser);
  await agentOpens(agent, question);
  const reply = unique('Yes, 10% today.');
  await agentReplies(agent, reply);
  await expect(visitor.page.locator('#host-unread')).toHaveText('1 unread');
  await expect(visitor.page.getByLabel('1 unread messages')).toBeVisible();
  await expect(visitor.page.locator('#host-events')).toContainText(reply);

  await visitor.page.getByRole('button', { name: 'Open chat' }).click();
  await expect(visitor.chat.getByRole('log')).toContainText(reply);
  await expect(visitor.page.locator('#host-unread')).toHaveText('');
  await visitor.context.close();
  await agent.context().close();
});

test('on a phone the chat fills the screen', async ({ browser }) => {
  const visitor = await visitHostPage(browser, { width: 390, height: 780 });
  await openChat(visitor);
  const box = await visitor.page.locator('iframe[title="Chat"]').boundingBox();
  expect(box).not.toBeNull();
  expect(Math.round(box!.width)).toBe(390);
  expect(Math.round(box!.height)).toBe(780);
  await visitor.chat.getByRole('button', { name: 'Close chat' }).click();
  await expect(visitor.page.getByRole('button', { name: 'Open chat' })).toBeVisible();
  await visitor.context.close();
});

test('the console refuses a wrong password', async ({ page }) => {
  await page.goto(`${CHAT_ORIGIN}/console/login`);
  await page.getByLabel('Email').fill('agent@demo.parley');
  await page.getByLabel('Password').fill('not the password');
  await page.getByRole('button', { name: 'Sign in' }).click();
  await expect(page.getByText('Wrong email or password.')).toBeVisible();
  await page.goto(`${CHAT_ORIGIN}/console`);
  await expect(page).toHaveURL(/\/console\/login/);
});

test('the inbox updates live with unread counts', async ({ browser }) => {
  const agent = await signInAgent(browser);
  const visitor = await visitHostPage(browser);
  await openChat(visitor);
  const first = unique('Hello from a new visitor');
  await visitorSends(visitor, first);
  // The conversation appears in the agent's list without a reload, with its unread count.
  const row = agent.getByRole('link').filter({ hasText: first });
  await expect(row).toBeVisible();
  await expect(row.getByLabel('1 unread')).toBeVisible();
  const second = unique('And one more thing');
  await visitorSends(visitor, second);
  const updated = agent.getByRole('link').filter({ hasText: second });
  await expect(updated.getByLabel('2 unread')).toBeVisible();
  // Opening it reads it.
  await updated.click();
  await expect(agent.getByRole('log')).toContainText(second);
  await expect(agent.getByRole('link').filter({ hasText: second }).getByLabel(/unread/)).toHaveCount(0);
  await visitor.context.close();
  await agent.context().close();
});
