// Hostile text is inert everywhere it is shown: a corpus of XSS payloads written by a visitor (widget), an agent
// (console) and a Messenger customer (sandbox page, including a hostile profile name) must render as the same text
// in the widget, the console and the sandbox's Messenger page. Checked in Chromium itself: no payload runs (each
// would set `window.__pwned` or open a dialog) and no element or attribute is injected into any message log.
import { test, expect, type Page, type Frame } from '@playwright/test';
import {
  agentOpens,
  agentReplies,
  inChatFrame,
  openChat,
  signInAgent,
  unique,
  visitHostPage,
  visitorSends,
} from './fixtures';

const RUN = 'window.__pwned=(window.__pwned||0)+1';
const CORPUS = [
  `<img src=x onerror="${RUN}">`,
  `<script>${RUN}</script>`,
  `<svg onload="${RUN}"></svg>`,
  `"><img src=x onerror=${RUN}>`,
  `'><svg/onload=${RUN}>`,
  `<a href="javascript:${RUN}">click me</a>`,
  `<iframe srcdoc="<script>parent.__pwned=1</script>"></iframe>`,
  `javascript:${RUN}`,
  `[click](javascript:${RUN})`,
  `<math><mtext><table><mglyph><style><img src=x onerror=${RUN}>`,
  `<details open ontoggle="${RUN}">`,
  `<style>*{display:none!important}</style>`,
  `&lt;img src=x onerror=${RUN}&gt;`,
  `{{constructor.constructor('${RUN}')()}}`,
  `\u202e<b>reversed</b>`,
];

/** Arms every frame of `page` so a payload that runs is counted, and dialogs are recorded. */
async function arm(page: Page): Promise<string[]> {
  const dialogs: string[] = [];
  page.on('dialog', async (d) => {
    dialogs.push(d.message());
    await d.dismiss();
  });
  return dialogs;
}

/** What an injection would leave behind in one frame: payload runs, and elements/attributes inside message logs. */
async function injected(frame: Frame): Promise<{ ran: number; found: string[] }> {
  return frame.evaluate(() => {
    const w = window as unknown as { __pwned?: number };
    const found: string[] = [];
    for (const log of Array.from(document.querySelectorAll('[role="log"]'))) {
      for (const el of Array.from(log.querySelectorAll('*'))) {
        const tag = el.tagName.toLowerCase();
        if (['script', 'iframe', 'style', 'math', 'details', 'object', 'embed'].includes(tag)) found.push(`<${tag}>`);
        if (tag === 'img' && !(el as HTMLImageElement).src.startsWith(location.origin)) found.push(`<img ${(el as HTMLImageElement).src}>`);
        for (const attr of Array.from(el.attributes)) {
          if (attr.name.startsWith('on')) found.push(`${tag}[${attr.name}]`);
          if (/^\s*javascript:/i.test(attr.value)) found.push(`${tag}[${attr.name}=${attr.value}]`);
        }
      }
    }
    return { ran: w.__pwned ?? 0, found };
  });
}

async function expectInert(page: Page, dialogs: string[]): Promise<void> {
  for (const frame of page.frames()) {
    const result = await injected(frame);
    expect(result, `frame ${frame.url()}`).toEqual({ ran: 0, found: [] });
  }
  expect(dialogs).toEqual([]);
}

test('an XSS corpus from visitors, agents and Messenger customers renders as text everywhere', async ({ browser }) => {
  test.setTimeout(180_000);
  const visitor = await visitHostPage(browser);
  const visitorDialogs = await arm(visitor.page);
  await openChat(visitor);
  const tag = unique('xss');
  const first = `${tag} opening`;
  await visitorSends(visitor, first);

  const agent = await signInAgent(browser);
  const agentDialogs = await arm(agent);
  await agentOpens(agent, first);

  // Visitor → console.
  for (const payload of CORPUS) {
    const text = `${payload} v-${tag}`;
    await visitorSends(visitor, text);
    await expect(agent.getByRole('log')).toContainText(text);
  }
  // Agent → widget.
  for (const payload of CORPUS) {
    const text = `${payload} a-${tag}`;
    await agentReplies(agent, text);
    await expect(visitor.chat.getByRole('log')).toContainText(text);
  }
  await expectInert(visitor.page, visitorDialogs);
  await expectInert(agent, agentDialogs);

  // A Messenger customer with a hostile profile name continues the conversation and writes the corpus. The test
  // opens the m.me link itself (with the sandbox's profile parameters), so the chat's pop-up is blocked and the
  // button turns into the link it would have opened.
  await inChatFrame(visitor, () => {
    window.open = () => null;
  });
  await visitor.chat.getByRole('button', { name: 'Continue on Messenger' }).click();
  const link = visitor.chat.getByRole('link', { name: 'Continue on Messenger' });
  await expect(link).toHaveAttribute('href', /ref=/);
  const href = await link.getAttribute('href');
  expect(href).toBeTruthy();
  const hostileName = `<img src=x onerror="${RUN}">`;
  const messenger = await visitor.context.newPage();
  const messengerDialogs = await arm(messenger);
  await messenger.goto(`${href}&new=1&first_name=${encodeURIComponent(hostileName)}&last_name=${encodeURIComponent('<b>X</b>')}`);
  await messenger.getByRole('button', { name: 'Get Started' }).click();
  await messenger.getByRole('button', { name: 'Yes, continue here' }).click();
  const thread = messenger.getByRole('log');
  // The recap of the (hostile) web conversation arrives first.
  await expect(thread).toContainText("Here's where we left off");
  await expect(visitor.chat.getByText(/Continued on Messenger as/)).toBeVisible();
  for (const payload of CORPUS) {
    const text = `${payload} m-${tag}`;
    await messenger.getByRole('textbox', { name: 'Message' }).fill(text);
    await messenger.getByRole('button', { name: 'Send' }).click();
    await expect(thread).toContainText(text);
    await expect(agent.getByRole('log')).toContainText(text);
    await expect(visitor.chat.getByRole('log')).toContainText(text);
  }
  // The hostile profile name shows as text in the widget and the console.
  await expect(visitor.chat.getByText(`Continued on Messenger as ${hostileName}`)).toBeVisible();
  await expect(agent.getByText(hostileName).first()).toBeVisible();
  // Agent replies reach the Messenger page as text too.
  for (const payload of CORPUS.slice(0, 5)) {
    const text = `${payload} r-${tag}`;
    await agentReplies(agent, text);
    await expect(thread).toContainText(text);
  }
  await expectInert(messenger, messengerDialogs);
  await expectInert(visitor.page, visitorDialogs);
  await expectInert(agent, agentDialogs);

  await visitor.context.close();
  await agent.context().close();
});
