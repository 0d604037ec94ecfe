// The console under its own Content-Security-Policy: it still hydrates (the live socket opens, which only the Wasm
// does), no script or resource is blocked, and signing out in one tab closes the other tab's live socket.
import { test, expect, type Page } from '@playwright/test';
import { AGENT_EMAIL, AGENT_PASSWORD, CHAT_ORIGIN } from './fixtures';

/** Records every CSP violation the page reports, from before any of its scripts runs. */
async function recordViolations(page: Page): Promise<void> {
  await page.addInitScript(() => {
    const seen: string[] = [];
    (window as unknown as { __csp: string[] }).__csp = seen;
    document.addEventListener('securitypolicyviolation', (e) => seen.push(`${e.violatedDirective} ${e.blockedURI}`));
  });
}

async function violations(page: Page): Promise<string[]> {
  return page.evaluate(() => (window as unknown as { __csp: string[] }).__csp);
}

test('the console hydrates under its CSP, and signing out closes the live socket of another tab', async ({ browser }) => {
  const context = await browser.newContext();
  const page = await context.newPage();
  await recordViolations(page);
  const login = await page.goto(`${CHAT_ORIGIN}/console/login`);
  const csp = login!.headers()['content-security-policy'];
  expect(csp).toContain("frame-ancestors 'none'");
  expect(csp).toContain("'nonce-");
  expect(login!.headers()['x-frame-options']).toBe('DENY');

  await page.getByLabel('Email').fill(AGENT_EMAIL);
  await page.getByLabel('Password').fill(AGENT_PASSWORD);
  // The live socket is opened by the hydrated Wasm only: seeing it proves hydration under the policy.
  const socket = page.waitForEvent('websocket', (ws) => ws.url().includes('/ws/agent'));
  await page.getByRole('button', { name: 'Sign in' }).click();
  await expect(page.getByRole('button', { name: 'Sign out' })).toBeVisible();
  const live = await socket;
  expect(await violations(page)).toEqual([]);

  // A second tab signs out: the first tab's socket is closed by the server and the console leaves for the login.
  const other = await context.newPage();
  await other.goto(`${CHAT_ORIGIN}/console`);
  await other.getByRole('button', { name: 'Sign out' }).click();
  await expect(other).toHaveURL(/\/console\/login/);
  await live.waitForEvent('close', { timeout: 20_000 });
  // Close code 4401 sends the console to its login page at once (no reconnect attempts first).
  await expect(page).toHaveURL(/\/console\/login/, { timeout: 5_000 });
  expect(await violations(page)).toEqual([]);
  await context.close();
});
