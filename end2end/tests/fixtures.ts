// Shared steps: a visitor on the demo customer page (another origin) and a signed-in agent, in separate browser
// contexts so they share nothing but the server.
import { expect, type Browser, type BrowserContext, type FrameLocator, type Page } from '@playwright/test';
import { execFileSync } from 'node:child_process';
import { CHAT_ORIGIN, DATABASE_PATH, DATABASE_URL, HOST_ORIGIN } from '../playwright.config';

export { CHAT_ORIGIN, HOST_ORIGIN };

/** Rows in a table of the demo server's database, read with Debian's sqlite3 shell (installed by xtask), or with
 * psql (Debian's postgresql-client) on the three-node cluster's PostgreSQL. */
export function countRows(table: 'contacts' | 'conversations' | 'messenger_links'): number {
  const query = `select count(*) from ${table}`;
  const out = DATABASE_URL
    ? execFileSync('psql', [DATABASE_URL, '-tAc', query], { encoding: 'utf8' })
    : execFileSync('sqlite3', [DATABASE_PATH, query], { encoding: 'utf8' });
  return Number(out.trim());
}
export const AGENT_EMAIL = 'agent@demo.parley';
export const AGENT_PASSWORD = 'e2e-password-1';

export function unique(text: string): string {
  return `${text} ${Math.random().toString(36).slice(2, 8)}`;
}

export interface Visitor {
  context: BrowserContext;
  page: Page;
  chat: FrameLocator;
}

/** A visitor on the host page. */
export async function visitHostPage(browser: Browser, viewport = { width: 1280, height: 800 }): Promise<Visitor> {
  const context = await browser.newContext({ viewport });
  const page = await context.newPage();
  await page.goto(`${HOST_ORIGIN}/`);
  const chat = page.frameLocator('iframe[title="Chat"]');
  return { context, page, chat };
}

/** Another tab of the same visitor (same browser context) on the host page. */
export async function newTab(visitor: Visitor): Promise<Visitor> {
  const page = await visitor.context.newPage();
  await page.goto(`${HOST_ORIGIN}/`);
  return { context: visitor.context, page, chat: page.frameLocator('iframe[title="Chat"]') };
}

/** Runs `script` inside the chat frame (on the chat origin) of a visitor's page. */
export async function inChatFrame<T>(visitor: Visitor, script: () => T): Promise<T> {
  await expect(visitor.page.locator('iframe[title="Chat"]')).toHaveCount(1);
  const frame = visitor.page.frames().find((f) => f.url().startsWith(`${CHAT_ORIGIN}/frame/`));
  if (!frame) throw new Error('no chat frame');
  return frame.evaluate(script);
}

/** Opens the chat panel from the launcher and waits for the composer. */
export async function openChat(visitor: Visitor): Promise<void> {
  await visitor.page.getByRole('button', { name: 'Open chat' }).click();
  await expect(visitor.chat.getByRole('textbox', { name: 'Type a message' })).toBeVisible();
}

/** Types and sends a message with Enter. */
export async function visitorSends(visitor: Visitor, text: string): Promise<void> {
  const composer = visitor.chat.getByRole('textbox', { name: 'Type a message' });
  await composer.fill(text);
  await composer.press('Enter');
  await expect(visitor.chat.getByRole('log')).toContainText(text);
}

/** A signed-in agent on the console. */
export async function signInAgent(browser: Browser): Promise<Page> {
  const context = await browser.newContext({ viewport: { width: 1400, height: 900 } });
  const page = await context.newPage();
  await page.goto(`${CHAT_ORIGIN}/console/login`);
  await page.getByLabel('Email').fill(AGENT_EMAIL);
  await page.getByLabel('Password').fill(AGENT_PASSWORD);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await expect(page.getByRole('button', { name: 'Sign out' })).toBeVisible();
  return page;
}

/** Opens the conversation whose last message contains `text`. */
export async function agentOpens(agent: Page, text: string): Promise<void> {
  await agent.getByRole('link').filter({ hasText: text }).click();
  await expect(agent.getByRole('log')).toContainText(text);
}

export async function agentReplies(agent: Page, text: string): Promise<void> {
  const composer = agent.getByRole('textbox', { name: 'Reply' });
  await composer.fill(text);
  await composer.press('Enter');
  await expect(agent.getByRole('log')).toContainText(text);
}
