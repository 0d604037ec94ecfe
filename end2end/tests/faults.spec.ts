// A fault proxy between a real browser widget and the server: this spec starts its own `parley demo` whose public
// URL is the in-repo `faultproxy` (so the host page, the chat frame, its WebSocket and the console all go through
// it), then injects latency, a cut, a reset and a blackhole while the visitor and the agent write. Every message
// must arrive exactly once, in order, on both sides.
import { test, expect, type Page } from '@playwright/test';
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as readline from 'node:readline';
import { AGENT_PASSWORD, AGENT_EMAIL, openChat, unique, type Visitor } from './fixtures';

const root = path.resolve(__dirname, '../..');
const bin = process.env.PARLEY_E2E_BIN ?? path.join(root, 'target/debug/parley-demo');
const proxyBin = process.env.PARLEY_E2E_FAULTPROXY_BIN ?? path.join(path.dirname(bin), 'faultproxy');
const site = process.env.PARLEY_E2E_SITE_DIR ?? path.join(root, 'target/site');
const CHAT_PORT = Number(process.env.PARLEY_E2E_FAULTS_CHAT_PORT ?? 3937);
const PROXY_PORT = Number(process.env.PARLEY_E2E_FAULTS_PROXY_PORT ?? 3938);
const HOST_PORT = Number(process.env.PARLEY_E2E_FAULTS_HOST_PORT ?? 8937);
const PUBLIC = `http://127.0.0.1:${PROXY_PORT}`;
const HOST = `http://localhost:${HOST_PORT}`;

/** The fault proxy process, driven one command line at a time. */
class Proxy {
  private lines: AsyncIterableIterator<string>;
  constructor(private child: ChildProcessWithoutNullStreams) {
    this.lines = readline.createInterface({ input: child.stdout })[Symbol.asyncIterator]();
  }
  static async start(): Promise<Proxy> {
    expect(fs.existsSync(proxyBin), `${proxyBin} (built by cargo test -p faultproxy)`).toBe(true);
    const child = spawn(proxyBin, ['--listen', `127.0.0.1:${PROXY_PORT}`, '--upstream', `127.0.0.1:${CHAT_PORT}`]);
    const proxy = new Proxy(child);
    const first = await proxy.lines.next();
    expect(first.value).toContain('listening on');
    return proxy;
  }
  async send(command: string): Promise<string> {
    this.child.stdin.write(command + '\n');
    const answer = (await this.lines.next()).value as string;
    expect(answer, command).toMatch(/^ok/);
    return answer;
  }
  /** Waits until at least `n` connections are open through the proxy (the widget and console sockets are back). */
  async connections(n: number): Promise<void> {
    await expect
      .poll(async () => Number(/connections=(\d+)/.exec(await this.send('status'))?.[1] ?? 0), { timeout: 30_000 })
      .toBeGreaterThanOrEqual(n);
  }
  stop(): void {
    this.child.kill('SIGKILL');
  }
}

async function startParley(): Promise<ChildProcessWithoutNullStreams> {
  const data = fs.mkdtempSync(path.join(os.tmpdir(), 'parley-faults-'));
  const child = spawn(bin, ['demo', '--host-bind', `127.0.0.1:${HOST_PORT}`, '--no-messenger'], {
    env: {
      ...process.env,
      PARLEY_HTTP__BIND: `127.0.0.1:${CHAT_PORT}`,
      PARLEY_HTTP__PUBLIC_URL: PUBLIC,
      PARLEY_DATABASE__URL: `sqlite://${data}/parley.db`,
      PARLEY_ASSETS__DIR: site,
      PARLEY_DEMO_EMAIL: AGENT_EMAIL,
      PARLEY_DEMO_PASSWORD: AGENT_PASSWORD,
      RUST_LOG: 'warn',
    },
  });
  child.stderr.on('data', (d) => process.stderr.write(`[faults parley] ${d}`));
  // Healthy through the proxy: both processes are up.
  await expect
    .poll(async () => fetch(`${PUBLIC}/healthz`).then((r) => r.status).catch(() => 0), { timeout: 30_000 })
    .toBe(200);
  return child;
}

async function signIn(page: Page): Promise<void> {
  await page.goto(`${PUBLIC}/console/login`);
  await page.getByLabel('Email').fill(AGENT_EMAIL);
  await page.getByLabel('Password').fill(AGENT_PASSWORD);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await expect(page.getByRole('button', { name: 'Sign out' })).toBeVisible();
}

/** Each text occurs exactly once in `log`, in the given order. */
async function onceInOrder(log: string, texts: string[]): Promise<void> {
  let at = -1;
  for (const text of texts) {
    const first = log.indexOf(text);
    expect(first, `${text} arrived`).toBeGreaterThanOrEqual(0);
    expect(log.indexOf(text, first + 1), `${text} arrived once`).toBe(-1);
    expect(first, `${text} in order`).toBeGreaterThan(at);
    at = first;
  }
}

test('through latency, a cut, a reset and a blackhole every message arrives once, in order', async ({ browser }) => {
  test.setTimeout(180_000);
  const proxy = await Proxy.start();
  const parley = await startParley();
  try {
    const context = await browser.newContext();
    const page = await context.newPage();
    await page.goto(`${HOST}/`);
    const visitor: Visitor = { context, page, chat: page.frameLocator('iframe[title="Chat"]') };
    await openChat(visitor);
    const composer = visitor.chat.getByRole('textbox', { name: 'Type a message' });
    const tag = unique('fault');
    const fromVisitor: string[] = [];
    const fromAgent: string[] = [];
    const visitorWrites = async (label: string) => {
      const text = `${label} v-${tag}`;
      fromVisitor.push(text);
      await composer.fill(text);
      await composer.press('Enter');
      await expect(visitor.chat.getByRole('log')).toContainText(text);
    };
    await visitorWrites('before any fault');

    const agent = await (await browser.newContext()).newPage();
    await signIn(agent);
    await agent.getByRole('link').filter({ hasText: fromVisitor[0] }).click();
    const agentLog = agent.getByRole('log');
    await expect(agentLog).toContainText(fromVisitor[0]);
    const agentWrites = async (label: string) => {
      const text = `${label} a-${tag}`;
      fromAgent.push(text);
      const reply = agent.getByRole('textbox', { name: 'Reply' });
      await reply.fill(text);
      await reply.press('Enter');
    };

    // Latency: everything is slow, nothing is out of order.
    await proxy.send('latency 150');
    await visitorWrites('slow one');
    await visitorWrites('slow two');
    await agentWrites('slow answer');
    await expect(agentLog).toContainText(fromVisitor[2]);
    await proxy.send('latency 0');

    // A cut with messages in flight on both sides.
    await visitorWrites('right before the cut');
    await agentWrites('answer before the cut');
    // The chat frame's socket and the console's are open, so the cut hits both.
    await proxy.connections(2);
    expect(Number((await proxy.send('cut')).split(' ')[2])).toBeGreaterThanOrEqual(2);
    await visitorWrites('after the cut');
    await agentWrites('answer after the cut');

    // A reset (RST) of every connection.
    await visitorWrites('right before the reset');
    // Both sides reconnected after the cut: the reset hits their new sockets.
    await expect(agentLog).toContainText(fromVisitor[fromVisitor.length - 1]);
    await proxy.connections(2);
    expect(Number((await proxy.send('reset')).split(' ')[2])).toBeGreaterThanOrEqual(2);
    await visitorWrites('after the reset');
    await agentWrites('answer after the reset');

    // A blackhole: bytes are held, then delivered in order.
    await expect(agentLog).toContainText(fromVisitor[fromVisitor.length - 1]);
    await proxy.connections(2);
    await proxy.send('blackhole on');
    await visitorWrites('into the blackhole');
    await agentWrites('answer into the blackhole');
    // The proxy really holds what was written.
    await expect
      .poll(async () => Number(/held=(\d+)/.exec(await proxy.send('status'))?.[1] ?? 0))
      .toBeGreaterThan(0);
    await proxy.send('blackhole off');
    await visitorWrites('after the blackhole');

    // Both sides end with every message once, in order.
    for (const text of fromVisitor) await expect(agentLog).toContainText(text, { timeout: 60_000 });
    for (const text of fromAgent) await expect(visitor.chat.getByRole('log')).toContainText(text, { timeout: 60_000 });
    await onceInOrder(await agentLog.innerText(), fromVisitor);
    await onceInOrder(await agentLog.innerText(), fromAgent);
    await onceInOrder(await visitor.chat.getByRole('log').innerText(), fromVisitor);
    await onceInOrder(await visitor.chat.getByRole('log').innerText(), fromAgent);
    // And after a reload of both, from the server's log: still once each.
    await page.reload();
    await openChat(visitor);
    for (const text of [...fromVisitor, ...fromAgent]) await expect(visitor.chat.getByRole('log')).toContainText(text);
    await onceInOrder(await visitor.chat.getByRole('log').innerText(), fromVisitor);
    await onceInOrder(await visitor.chat.getByRole('log').innerText(), fromAgent);
    await agent.reload();
    for (const text of fromVisitor) await expect(agent.getByRole('log')).toContainText(text);
    await onceInOrder(await agent.getByRole('log').innerText(), [...fromVisitor]);
    await onceInOrder(await agent.getByRole('log').innerText(), [...fromAgent]);
  } finally {
    parley.kill('SIGTERM');
    proxy.stop();
  }
});
