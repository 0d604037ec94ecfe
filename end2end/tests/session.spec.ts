// Where the visitor's session lives when the host page is on another site (the chat frame is a third party, so
// it has no localStorage): the chat origin's HttpOnly partitioned cookie. The same conversation comes back in new
// tabs, two tabs of a brand-new visitor opened at once end in one conversation (also when the second tab's session
// answer lands only after the first tab wrote), and no script can read the token.
import { test, expect, type APIRequest, type Browser, type BrowserContext, type Page, type Route } from '@playwright/test';
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
  type Visitor,
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
  // Both frames load and set up the session at once.
  const tabs = await openTogether(context, pages);
  const texts = [unique('Hello from tab one'), unique('Hello from tab two')];
  await Promise.all(tabs.map((tab, i) => visitorSends(tab, texts[i])));
  await oneConversation(browser, tabs, texts);
  await context.close();
});

/** A session call held on its way back: the server answered (and minted), the browser has not seen the answer. */
interface HeldSession {
  /** Resolves once the server answered the tab's session call. */
  answered: Promise<void>;
  /** Lets the answer land: the browser stores the cookie it sets, then the frame gets the answer. */
  land: () => Promise<void>;
}

/**
 * Holds the first session call of each of `pages` as if it were slow on its way back: the call goes to the server
 * at once, without any cookie (as it left the frame before any answer had set one), and the server mints; the
 * answer lands only on `land()`. Playwright cannot delay a response and keep its `Set-Cookie` for the browser, so
 * the cookie is stored as the browser stores it (same name, value, attributes and partition) right before the
 * frame gets the answer.
 */
async function holdSessionAnswers(context: BrowserContext, api: APIRequest, pages: Page[]): Promise<HeldSession[]> {
  const holds = pages.map(() => {
    const hold = { taken: false, answered: () => {}, release: () => {}, landed: (_error?: unknown) => {} };
    const answered = new Promise<void>((resolve) => (hold.answered = resolve));
    const released = new Promise<void>((resolve) => (hold.release = resolve));
    const landed = new Promise<void>((resolve, reject) => (hold.landed = (e) => (e ? reject(e) : resolve())));
    return { hold, answered, released, landed };
  });
  // On the context: the chat frame is out of process, and its requests are the context's to route.
  await context.route('**/api/visitor/session?**', async (route: Route) => {
    const body = route.request().postData() ?? '';
    const held = holds[pages.indexOf(route.request().frame().page())];
    if (!held || held.hold.taken || body.includes('"check"')) return route.continue();
    held.hold.taken = true;
    try {
      const client = await api.newContext();
      const answer = await client.post(route.request().url(), {
        headers: { origin: CHAT_ORIGIN, 'content-type': 'text/plain;charset=UTF-8' },
        data: body,
      });
      const setCookie = answer.headers()['set-cookie'] ?? '';
      const reply = await answer.text();
      await client.dispose();
      expect(JSON.parse(reply).minted, 'the held session call must have minted a token').toBe(true);
      held.hold.answered();
      await held.released;
      const [pair, ...attributes] = setCookie.split(';').map((part) => part.trim());
      const at = pair.indexOf('=');
      expect(attributes).toEqual(['Max-Age=34560000', 'Path=/', 'Secure', 'HttpOnly', 'SameSite=None', 'Partitioned']);
      await context.addCookies([
        {
          name: pair.slice(0, at),
          value: pair.slice(at + 1),
          domain: new URL(CHAT_ORIGIN).hostname,
          path: '/',
          expires: Math.floor(Date.now() / 1000) + 34_560_000,
          httpOnly: true,
          secure: true,
          sameSite: 'None',
          partitionKey: `http://${new URL(HOST_ORIGIN).hostname}`,
          _crHasCrossSiteAncestor: true,
        } as Parameters<BrowserContext['addCookies']>[0][number],
      ]);
      held.hold.landed();
      await route.fulfill({ status: answer.status(), contentType: 'application/json', body: reply });
    } catch (error) {
      held.hold.landed(error);
    }
  });
  return holds.map(({ hold, answered, landed }) => ({
    answered,
    land: async () => {
      hold.release();
      await landed;
    },
  }));
}

/** Two tabs of one new visitor on the host page, with their chat panels open at once. */
async function openTogether(context: BrowserContext, pages: Page[]): Promise<Visitor[]> {
  await Promise.all(pages.map((p) => p.goto(`${HOST_ORIGIN}/`)));
  const tabs = pages.map((page) => ({ context, page, chat: page.frameLocator('iframe[title="Chat"]') }));
  // The chat frame loads on the visitor's intent: open both at once, so both session calls leave without a cookie.
  await Promise.all(tabs.map((tab) => openChat(tab)));
  return tabs;
}

/** Both tabs show both messages, and the agent has one conversation holding them. */
async function oneConversation(browser: Browser, tabs: Visitor[], texts: string[]): Promise<void> {
  for (const tab of tabs) {
    for (const text of texts) await expect(tab.chat.getByRole('log')).toContainText(text);
  }
  const agent = await signInAgent(browser);
  // One contact, one conversation: a single inbox row, holding both messages.
  await expect(rowsWithAny(agent, texts)).toHaveCount(1);
  await rowsWithAny(agent, texts).click();
  for (const text of texts) await expect(agent.getByRole('log')).toContainText(text);
  await agent.context().close();
}

// The race above, made certain: tab B's session call leaves before tab A has a cookie (so the server mints a second
// token for it), and its answer lands only after tab A wrote. Before the fix that answer overwrote tab A's cookie and
// tab B started a second conversation; now the second token gets a cookie of its own, the browser sends the oldest
// first, and tab B's socket speaks for tab A's token.
test('a second tab whose session answer lands after the first tab wrote joins the same conversation', async ({
  browser,
  playwright,
}) => {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const pages = [await context.newPage(), await context.newPage()];
  const [heldB] = await holdSessionAnswers(context, playwright.request, [pages[1]]);
  const [tabA, tabB] = await openTogether(context, pages);
  await heldB.answered;

  const first = unique('Written in tab A before tab B has its session');
  await visitorSends(tabA, first);
  await expect(tabA.chat.getByText('Sent').or(tabA.chat.getByText('Read')).first()).toBeVisible();
  await heldB.land();
  const second = unique('Written in tab B after its session answer landed');
  await visitorSends(tabB, second);
  await oneConversation(browser, [tabA, tabB], [first, second]);
  await context.close();
});

// Both session answers so slow that both frames stop waiting (5 s) and open their sockets without a cookie: each
// socket gets a token of its own in `welcome`. The answers then land, and both tabs write at once. Each frame's
// check before its first write sees that its socket's sid is not the jar's and reconnects on the jar's oldest
// cookie first, so both messages land in one conversation.
test('tabs whose sockets opened before any cookie landed move to the jar token before they write', async ({
  browser,
  playwright,
}) => {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const pages = [await context.newPage(), await context.newPage()];
  const held = await holdSessionAnswers(context, playwright.request, pages);
  const tabs = await openTogether(context, pages);
  await Promise.all(held.map((h) => h.answered));
  // Online without the answers: the frames gave up waiting and said hello without a cookie.
  for (const tab of tabs) await expect(tab.chat.getByText('Connecting…')).toBeHidden({ timeout: 20_000 });
  for (const h of held) await h.land();

  const texts = [unique('Tab one, socket opened early'), unique('Tab two, socket opened early')];
  await Promise.all(tabs.map((tab, i) => visitorSends(tab, texts[i])));
  await oneConversation(browser, tabs, texts);
  await context.close();
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
