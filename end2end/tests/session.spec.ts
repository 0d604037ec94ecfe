// Where the visitor's session lives when the host page is on another site (the chat frame is a third party, so
// it has no localStorage): the chat origin's HttpOnly partitioned cookie. The same conversation comes back in new
// tabs, two tabs of a brand-new visitor opened at once end in one conversation (also when the second tab's session
// answer lands only after the first tab wrote), and no script can read the token.
import { test, expect, type Page, type Route } from '@playwright/test';
import {
  CHAT_ORIGIN,
  HOST_ORIGIN,
  agentOpens,
  agentReplies,
  inChatFrame,
  newTab,
  openChat,
  signInAgent,
  unique,
  visitHostPage,
  visitorSends,
} from './fixtures';

/** The inbox rows whose preview shows any of `texts`. */
function rowsWithAny(agent: Page, texts: string[]) {
  const links = agent.getByRole('link');
  return texts.slice(1).reduce((rows, t) => rows.or(links.filter({ hasText: t })), links.filter({ hasText: texts[0] }));
}

test('a new tab of the same host site continues the same conversation', async ({ browser }) => {
  const visitor = await visitHostPage(browser);
  await openChat(visitor);
  const first = unique('Written in the first tab');
  await visitorSends(visitor, first);

  const second = await newTab(visitor);
  await openChat(second);
  await expect(second.chat.getByRole('log')).toContainText(first);
  const next = unique('Written in the second tab');
  await visitorSends(second, next);
  // Both tabs show both messages, live.
  await expect(visitor.chat.getByRole('log')).toContainText(next);

  const agent = await signInAgent(browser);
  await expect(rowsWithAny(agent, [first, next])).toHaveCount(1);
  await agentOpens(agent, next);
  await expect(agent.getByRole('log')).toContainText(first);
  const reply = unique('One answer for both tabs');
  await agentReplies(agent, reply);
  await expect(visitor.chat.getByRole('log')).toContainText(reply);
  await expect(second.chat.getByRole('log')).toContainText(reply);
  await visitor.context.close();
  await agent.context().close();
});

test('two tabs opened at the same instant by a brand-new visitor end in one conversation', async ({ browser }) => {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const pages = await Promise.all([context.newPage(), context.newPage()]);
  await Promise.all(pages.map((p) => p.goto(`${HOST_ORIGIN}/`)));
  const tabs = pages.map((page) => ({ context, page, chat: page.frameLocator('iframe[title="Chat"]') }));
  // Both frames load and set up the session at once.
  await Promise.all(tabs.map((tab) => openChat(tab)));
  const texts = [unique('Hello from tab one'), unique('Hello from tab two')];
  await Promise.all(tabs.map((tab, i) => visitorSends(tab, texts[i])));
  for (const tab of tabs) {
    for (const text of texts) await expect(tab.chat.getByRole('log')).toContainText(text);
  }

  const agent = await signInAgent(browser);
  // One contact, one conversation: a single inbox row, holding both messages.
  await expect(rowsWithAny(agent, texts)).toHaveCount(1);
  await rowsWithAny(agent, texts).click();
  for (const text of texts) await expect(agent.getByRole('log')).toContainText(text);
  await context.close();
  await agent.context().close();
});

// The race above, made certain: tab B's session call leaves before tab A has a cookie (so the server mints a second
// token for it), and its answer lands only after tab A wrote. Before the fix that answer overwrote tab A's cookie and
// tab B started a second conversation; now the second token gets a cookie of its own, the browser sends the oldest
// first, and tab B's socket speaks for tab A's token.
test('a second tab whose session answer lands after the first tab wrote joins the same conversation', async ({
  browser,
  playwright,
}) => {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const [pageA, pageB] = await Promise.all([context.newPage(), context.newPage()]);
  let release = () => {};
  const released = new Promise<void>((resolve) => (release = resolve));
  let landed: (error?: unknown) => void = () => {};
  const tabBHasItsCookie = new Promise<void>((resolve, reject) => (landed = (e) => (e ? reject(e) : resolve())));
  let held = false;
  // On the context: the chat frame is out of process, and its requests are the context's to route.
  await context.route('**/api/visitor/session?**', async (route: Route) => {
    const body = route.request().postData() ?? '';
    if (held || body.includes('"check"') || route.request().frame().page() !== pageB) return route.continue();
    held = true;
    await holdTabB(route, body).catch(landed);
  });
  const holdTabB = async (route: Route, body: string) => {
    // The call as it left tab B's frame, without any cookie: the server mints.
    const api = await playwright.request.newContext();
    const answer = await api.post(route.request().url(), {
      headers: { origin: CHAT_ORIGIN, 'content-type': 'text/plain;charset=UTF-8' },
      data: body,
    });
    const setCookie = answer.headers()['set-cookie'] ?? '';
    const reply = await answer.text();
    await api.dispose();
    expect(JSON.parse(reply).minted, 'tab B must have minted a second token').toBe(true);
    await released;
    // The answer lands now: the browser stores its cookie (same attributes and partition as tab A's).
    const [pair] = setCookie.split(';');
    const at = pair.indexOf('=');
    const [tabACookie] = (await context.cookies(CHAT_ORIGIN)).filter((c) => c.name.startsWith('parley_v_demo'));
    await context.addCookies([{ ...tabACookie, name: pair.slice(0, at), value: pair.slice(at + 1) }]);
    landed();
    await route.fulfill({ status: answer.status(), contentType: 'application/json', body: reply });
  };
  await Promise.all([pageA, pageB].map((p) => p.goto(`${HOST_ORIGIN}/`)));
  const [tabA, tabB] = [pageA, pageB].map((page) => ({ context, page, chat: page.frameLocator('iframe[title="Chat"]') }));

  // The chat frame loads on the visitor's intent: open both at once, so both session calls leave without a cookie.
  await Promise.all([openChat(tabA), openChat(tabB)]);
  const first = unique('Written in tab A before tab B has its session');
  await visitorSends(tabA, first);
  await expect(tabA.chat.getByText('Sent').or(tabA.chat.getByText('Read')).first()).toBeVisible();
  release();
  await tabBHasItsCookie;

  const second = unique('Written in tab B after its session answer landed');
  await visitorSends(tabB, second);
  // One conversation: each tab shows the other's message.
  await expect(tabB.chat.getByRole('log')).toContainText(first);
  await expect(tabA.chat.getByRole('log')).toContainText(second);
  const agent = await signInAgent(browser);
  await expect(rowsWithAny(agent, [first, second])).toHaveCount(1);
  await context.close();
  await agent.context().close();
});

test('no script on the host page or in the frame can read the visitor token', async ({ browser }) => {
  const visitor = await visitHostPage(browser);
  await openChat(visitor);
  const text = unique('Is my token safe?');
  await visitorSends(visitor, text);
  await expect(visitor.chat.getByText('Sent').or(visitor.chat.getByText('Read')).first()).toBeVisible();

  // The browser holds the session as an HttpOnly, Secure, SameSite=None cookie of the chat origin, partitioned
  // under the host site.
  const cookies = (await visitor.context.cookies(CHAT_ORIGIN)).filter((c) => c.name.startsWith('parley_v_demo'));
  expect(cookies).toHaveLength(1);
  const [cookie] = cookies;
  expect(cookie.name).toMatch(/^parley_v_demo\.[0-9a-f]{8}$/);
  expect(cookie.httpOnly).toBe(true);
  expect(cookie.secure).toBe(true);
  expect(cookie.sameSite).toBe('None');
  expect(cookie.value).toMatch(/^[A-Za-z0-9_-]{43}$/);
  if ('partitionKey' in cookie) expect(String(cookie.partitionKey)).toContain('localhost');

  // Nothing on the host page: no cookie, no storage.
  expect(await visitor.page.evaluate(() => document.cookie)).toBe('');
  expect(await visitor.page.evaluate(() => localStorage.length + sessionStorage.length)).toBe(0);
  expect(await visitor.context.cookies(HOST_ORIGIN)).toEqual([]);
  // Nothing readable in the frame either: HttpOnly keeps the cookie from its script, and no storage holds it.
  const frameView = await inChatFrame(visitor, () => {
    let storage = '';
    try {
      for (let i = 0; i < localStorage.length; i++) storage += localStorage.getItem(localStorage.key(i) ?? '') ?? '';
    } catch {
      storage = 'blocked';
    }
    try {
      for (let i = 0; i < sessionStorage.length; i++) storage += sessionStorage.getItem(sessionStorage.key(i) ?? '') ?? '';
    } catch {
      storage += 'blocked';
    }
    return { cookie: document.cookie, storage };
  });
  expect(frameView.cookie).not.toContain(cookie.value);
  expect(frameView.storage).not.toContain(cookie.value);
  await visitor.context.close();
});
