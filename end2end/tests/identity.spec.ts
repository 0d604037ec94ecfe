// Signed identity: the demo host page's /account signs its customer in with Parley('identify', {id, name, email,
// hash}), the hash computed by the host server with the demo site's identity secret (as a customer's backend
// would). A customer's conversation follows them into a new browser (a fresh context: no cookie, no storage in
// common); a forged hash for the same id shows nothing of it; the anonymous page never shows it either.
import { test, expect, type Browser } from '@playwright/test';
import { HOST_ORIGIN, openChat, unique, visitorSends, type Visitor } from './fixtures';

/** A new browser (its own context) on a host page path. */
async function browserOn(browser: Browser, path: string): Promise<Visitor> {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const page = await context.newPage();
  await page.goto(`${HOST_ORIGIN}${path}`);
  return { context, page, chat: page.frameLocator('iframe[title="Chat"]') };
}

async function sentOnce(visitor: Visitor, text: string): Promise<void> {
  await visitorSends(visitor, text);
  await expect(visitor.chat.getByText('Sent').or(visitor.chat.getByText('Read')).first()).toBeVisible();
}

test('a signed-in customer finds their conversation in another browser, and nobody else does', async ({ browser }) => {
  const laptop = await browserOn(browser, '/account');
  await openChat(laptop);
  const privateText = unique('My order 1001 goes to 1 Private Lane');
  await sentOnce(laptop, privateText);

  // Another browser, the same signed-in customer: the same conversation.
  const phone = await browserOn(browser, '/account');
  await openChat(phone);
  await expect(phone.chat.getByRole('log')).toContainText(privateText);
  const fromPhone = unique('Written on the phone');
  await sentOnce(phone, fromPhone);
  await expect(laptop.chat.getByRole('log')).toContainText(fromPhone);

  // A browser on the anonymous page, and one claiming the customer's id with a forged hash: nothing of it.
  const anonymous = await browserOn(browser, '/');
  const forged = await browserOn(browser, '/');
  await forged.page.evaluate(() => {
    const w = window as unknown as { Parley: (...args: unknown[]) => void };
    w.Parley('identify', { id: 'demo-customer-ada', name: 'Mallory', hash: '00'.repeat(32) });
  });
  for (const stranger of [anonymous, forged]) {
    await openChat(stranger);
    const own = unique('A stranger writes');
    await sentOnce(stranger, own);
    await expect(stranger.chat.getByRole('log')).not.toContainText(privateText);
    await expect(stranger.chat.getByRole('log')).not.toContainText(fromPhone);
    // And the customer never sees the stranger's message.
    await expect(laptop.chat.getByRole('log')).not.toContainText(own);
  }
  for (const v of [laptop, phone, anonymous, forged]) await v.context.close();
});
