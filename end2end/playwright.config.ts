// Parley's browser tests. Playwright starts `parley-demo demo` (built by `cargo xtask build`) on its own ports with a
// throw-away SQLite database: the chat server on CHAT_ORIGIN and the demo customer page on HOST_ORIGIN, a
// different *site* (localhost vs 127.0.0.1, not only another port) that embeds the widget with the one script tag,
// so the chat frame is a third party exactly as on a customer's site: no frame localStorage, only partitioned
// cookies. Chromium is Debian's (/usr/bin/chromium) with its default third-party rules: never add a flag that
// relaxes them.
import { defineConfig } from '@playwright/test';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

const chatPort = Number(process.env.PARLEY_E2E_CHAT_PORT ?? 3917);
const hostPort = Number(process.env.PARLEY_E2E_HOST_PORT ?? 8917);
const messengerPort = Number(process.env.PARLEY_E2E_MESSENGER_PORT ?? 3918);
// On three nodes (`cargo xtask test` runs the suite a second time so): server/examples/cluster.rs has started
// nginx in front of three nodes on one PostgreSQL (node A is `parley-demo demo`: host page and sandbox) and names
// the origins; the runner starts no server of its own.
export const CLUSTER = process.env.PARLEY_E2E_CHAT_ORIGIN !== undefined;
export const CHAT_ORIGIN = process.env.PARLEY_E2E_CHAT_ORIGIN ?? `http://127.0.0.1:${chatPort}`;
// `parley demo` serves its host page as http://localhost:PORT when the chat is on 127.0.0.1.
export const HOST_ORIGIN = process.env.PARLEY_E2E_HOST_ORIGIN ?? `http://localhost:${hostPort}`;
// The cluster's PostgreSQL database (row counts then go through psql instead of sqlite3).
export const DATABASE_URL = process.env.PARLEY_E2E_DATABASE_URL;

const root = path.resolve(__dirname, '..');
const bin = process.env.PARLEY_E2E_BIN ?? path.join(root, 'target/debug/parley-demo');
const site = process.env.PARLEY_E2E_SITE_DIR ?? path.join(root, 'target/site');
// Made once by the runner; its workers (which load this file again) inherit the variable, so tests can read the
// server's database (DATABASE_PATH).
process.env.PARLEY_E2E_DATA_DIR ??= fs.mkdtempSync(path.join(os.tmpdir(), 'parley-e2e-'));
const data = process.env.PARLEY_E2E_DATA_DIR;
export const DATABASE_PATH = path.join(data, 'parley.db');

export default defineConfig({
  testDir: './tests',
  // faults.spec.ts starts its own single-node demo behind the fault proxy: it does not use the cluster.
  testIgnore: CLUSTER ? ['**/faults.spec.ts'] : [],
  timeout: 60_000,
  expect: { timeout: 10_000 },
  fullyParallel: false,
  workers: 1,
  retries: 0,
  reporter: process.env.CI ? [['list']] : [['list']],
  use: {
    baseURL: CHAT_ORIGIN,
    trace: 'retain-on-failure',
    launchOptions: {
      executablePath: process.env.CHROMIUM_PATH ?? '/usr/bin/chromium',
      args: [
        '--no-sandbox',
        '--disable-gpu',
        '--disable-quic',
        '--no-first-run',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
      ],
    },
  },
  webServer: CLUSTER ? undefined : {
    command: `"${bin}" demo --host-bind 127.0.0.1:${hostPort} --messenger-bind 127.0.0.1:${messengerPort}`,
    url: `${CHAT_ORIGIN}/healthz`,
    reuseExistingServer: false,
    timeout: 60_000,
    stdout: 'pipe',
    stderr: 'pipe',
    env: {
      PARLEY_HTTP__BIND: `127.0.0.1:${chatPort}`,
      PARLEY_DATABASE__URL: `sqlite://${data}/parley.db`,
      PARLEY_MESSENGER__SPOOL_DIR: `${data}/webhook-spool`,
      PARLEY_ASSETS__DIR: site,
      PARLEY_DEMO_EMAIL: 'agent@demo.parley',
      PARLEY_DEMO_PASSWORD: 'e2e-password-1',
      RUST_LOG: 'info',
      // Every browser of the suite connects from 127.0.0.1: per-address limits sized for a whole office instead.
      PARLEY_LIMITS__IP_HELLOS_PER_MINUTE: '600',
      PARLEY_LIMITS__IP_FRAME_BURST: '6000',
    },
  },
});
