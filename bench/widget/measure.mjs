// The widget-weight benchmark (scenario `widget` of `parley-bench run`, which starts Parley and this script).
//
// One host page, three ways: bare, with Parley's one script tag, and with the published build of
// @rocket.chat/livechat (its documented embed snippet). The host page is served here on http://localhost:HOST_PORT;
// the chats on other *sites* (http://127.0.0.1:…): Parley by the `parley serve` the harness started, Rocket.Chat's
// files (node_modules/@rocket.chat/livechat/build) by a static server here, at /livechat as a Rocket.Chat server
// would. There is no Rocket.Chat server behind those files: its API calls get 404, so it is measured only up to its
// first screen.
//
// Each run is a fresh browser context in Debian's Chromium with 4× CPU throttling (CDP
// Emulation.setCPUThrottlingRate). Site isolation is off (`--disable-site-isolation-trials`), so each cross-site
// chat frame runs in the page's renderer, as on Chrome for Android (which the throttled CPU stands for): the
// throttling then covers the frame too, and the page's CDP Performance metrics (TaskDuration, ScriptDuration) are
// all the main-thread work. Storage rules are untouched: the frame is still a third party.
//
// Prints one line of JSON: {"runs": {variant: [run, …]}, "files": {variant: {phase: [{url, raw, gzip, brotli}]}}}.

import http from 'node:http';
import fs from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const args = Object.fromEntries(
  process.argv.slice(2).reduce((acc, a, i, all) => (a.startsWith('--') ? [...acc, [a.slice(2), all[i + 1]]] : acc), []),
);
const PARLEY = args['parley-origin']; // e.g. http://127.0.0.1:3000, site key `bench`, allowed origin = host page's
const SITE_KEY = args['site-key'] ?? 'bench';
const HOST_PORT = Number(args['host-port']);
const RUNS = Number(args.runs ?? 5);
const THROTTLE = Number(args.throttle ?? 4);
const CHROMIUM = args.chromium ?? '/usr/bin/chromium';
const only = args.variants ? args.variants.split(',') : ['bare', 'parley', 'livechat'];
const here = path.dirname(fileURLToPath(import.meta.url));
const LIVECHAT_DIR = path.join(here, 'node_modules/@rocket.chat/livechat/build');
const LIVECHAT_VERSION = JSON.parse(
  fs.readFileSync(path.join(here, 'node_modules/@rocket.chat/livechat/package.json'), 'utf8'),
).version;

const log = (...m) => console.error('widget bench:', ...m);

// --- servers -------------------------------------------------------------------------------------------------

function listen(server, host) {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(args[`${host}-port`] ? Number(args[`${host}-port`]) : 0, '127.0.0.1', () => resolve(server.address().port));
  });
}

const ARTICLE = Array.from(
  { length: 12 },
  (_, i) =>
    `<p>Paragraph ${i + 1}. A customer's page as a visitor finds it: some text, no framework, nothing else to ` +
    `fetch, so that what the chat adds is all that differs between the variants of this page.</p>`,
).join('\n');

function hostPage(variant, livechatOrigin) {
  let embed = '';
  if (variant === 'parley') {
    embed = `<script src="${PARLEY}/widget.js" data-site="${SITE_KEY}" async></script>`;
  } else if (variant === 'livechat') {
    // Rocket.Chat's documented snippet (Administration → Omnichannel → Livechat installation), pointed at the files.
    embed = `<script type="text/javascript">
(function(w, d, s, u) {
  w.RocketChat = function(c) { w.RocketChat._.push(c) }; w.RocketChat._ = []; w.RocketChat.url = u;
  var h = d.getElementsByTagName(s)[0], j = d.createElement(s);
  j.async = true; j.src = '${livechatOrigin}/livechat/rocketchat-livechat.min.js?_=201903270000';
  h.parentNode.insertBefore(j, h);
})(window, document, 'script', '${livechatOrigin}/livechat');
</script>`;
  }
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Host page</title><link rel="icon" href="data:,">
<style>body{font:16px/1.5 system-ui,sans-serif;max-width:40em;margin:2em auto;padding:0 1em}</style></head>
<body><h1>A host page</h1>
${ARTICLE}
${embed}
</body></html>`;
}

function startHost(getLivechatOrigin) {
  const server = http.createServer((req, res) => {
    const variant = req.url.replace(/^\//, '').split('?')[0];
    if (!['bare', 'parley', 'livechat'].includes(variant)) {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' });
    res.end(hostPage(variant, getLivechatOrigin()));
  });
  return server;
}

const TYPES = { '.js': 'text/javascript', '.css': 'text/css', '.html': 'text/html', '.png': 'image/png', '.svg': 'image/svg+xml' };

function startLivechat() {
  return http.createServer((req, res) => {
    const url = new URL(req.url, 'http://x');
    let rel = null;
    if (url.pathname === '/livechat' || url.pathname === '/livechat/') rel = 'index.html';
    else if (url.pathname.startsWith('/livechat/')) rel = url.pathname.slice('/livechat/'.length);
    const file = rel && path.join(LIVECHAT_DIR, path.normalize(rel));
    if (!file || !file.startsWith(LIVECHAT_DIR) || !fs.existsSync(file) || !fs.statSync(file).isFile()) {
      // What a Rocket.Chat server would answer (/api/v1/livechat/config, …) is not here.
      res.writeHead(404, { 'content-type': 'application/json' }).end('{"success":false}');
      return;
    }
    res.writeHead(200, { 'content-type': TYPES[path.extname(file)] ?? 'application/octet-stream', 'cache-control': 'no-store' });
    res.end(fs.readFileSync(file));
  });
}

// --- one run -------------------------------------------------------------------------------------------------

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? s[Math.floor((s.length - 1) / 2)] : 0;
};

async function metrics(cdp) {
  const { metrics } = await cdp.send('Performance.getMetrics');
  const m = Object.fromEntries(metrics.map((x) => [x.name, x.value]));
  return { task: (m.TaskDuration ?? 0) * 1000, script: (m.ScriptDuration ?? 0) * 1000 };
}

const diff = (a, b) => ({ task: b.task - a.task, script: b.script - a.script });

/**
 * Waits until nothing happened for `quietMs`: no request in flight and the main thread (CDP TaskDuration) busy less
 * than a tenth of the time; gives up after `maxMs`.
 */
async function settle(cdp, inflight, quietMs = 1000, maxMs = 20000) {
  const start = Date.now();
  let quietSince = Date.now();
  let last = await metrics(cdp);
  while (Date.now() - start < maxMs) {
    await new Promise((r) => setTimeout(r, 100));
    const now = await metrics(cdp);
    if (inflight.size > 0 || now.task - last.task > 10) quietSince = Date.now();
    else if (Date.now() - quietSince >= quietMs) return;
    last = now;
  }
}

async function run(browser, variant, hostOrigin) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const page = await context.newPage();
  const cdp = await context.newCDPSession(page);
  await cdp.send('Emulation.setCPUThrottlingRate', { rate: THROTTLE });
  await cdp.send('Performance.enable', { timeDomain: 'timeTicks' });

  const requests = []; // {url, start (epoch ms, browser side), done: Promise<{raw bytes}>}
  const inflight = new Set();
  const phase = { name: 'load' };
  context.on('request', (req) => {
    inflight.add(req);
    const entry = { url: req.url(), phase: phase.name, seen: Date.now(), req, body: null, failed: false };
    requests.push(entry);
  });
  const finish = async (req, failed) => {
    inflight.delete(req);
    const entry = requests.find((e) => e.req === req);
    if (!entry) return;
    entry.failed = failed;
    try {
      const resp = failed ? null : await req.response();
      entry.status = resp ? resp.status() : 0;
      entry.body = resp ? await resp.body().catch(() => Buffer.alloc(0)) : Buffer.alloc(0);
    } catch {
      entry.body = Buffer.alloc(0);
    }
  };
  context.on('requestfinished', (req) => void finish(req, false));
  context.on('requestfailed', (req) => void finish(req, true));
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e.message)));
  let welcomeAt = null;
  let sockets = 0;
  page.on('websocket', (ws) => {
    sockets += 1;
    ws.on('framereceived', ({ payload }) => {
      if (welcomeAt === null && typeof payload === 'string' && payload.includes('"type":"welcome"')) welcomeAt = Date.now();
    });
  });

  // Watched from before the navigation, so it reports when the launcher appeared, not when this script looked.
  const launcherAt =
    variant === 'parley'
      ? page.getByRole('button', { name: 'Open chat' }).waitFor({ state: 'visible', timeout: 30000 }).then(() => Date.now())
      : null;
  const m0 = await metrics(cdp);
  const t0 = Date.now();
  await page.goto(`${hostOrigin}/${variant}`, { waitUntil: 'load' });
  const loadMs = Date.now() - t0;
  await settle(cdp, inflight);
  const m1 = await metrics(cdp);
  const paint = await page.evaluate(() => {
    const fp = performance.getEntriesByName('first-paint')[0];
    const fcp = performance.getEntriesByName('first-contentful-paint')[0];
    return { origin: performance.timeOrigin, fp: fp ? fp.startTime : null, fcp: fcp ? fcp.startTime : null };
  });
  const fpEpoch = paint.origin + (paint.fp ?? 0);
  // Request start on the browser's clock; `timing().startTime` is epoch ms of when the browser began it.
  const startOf = (e) => {
    const t = e.req.timing().startTime;
    return t > 0 ? t : e.seen;
  };
  const out = {
    first_paint_ms: paint.fp,
    first_contentful_paint_ms: paint.fcp,
    load_ms: loadMs,
    load_requests: requests.filter((e) => e.phase === 'load').length,
    requests_before_first_paint: requests.filter((e) => e.phase === 'load' && startOf(e) <= fpEpoch).length,
    load_task_ms: diff(m0, m1).task,
    load_script_ms: diff(m0, m1).script,
  };

  if (variant === 'parley') {
    const launcher = page.getByRole('button', { name: 'Open chat' });
    out.launcher_visible_ms = (await launcherAt) - t0;
    const box = await launcher.boundingBox();
    phase.name = 'click';
    const mc = await metrics(cdp);
    const c0 = Date.now();
    await page.mouse.click(box.x + box.width / 2, box.y + box.height / 2);
    const chat = page.frameLocator('iframe[title="Chat"]');
    await chat.getByRole('textbox', { name: 'Type a message' }).waitFor({ state: 'visible', timeout: 30000 });
    await page.locator('iframe[title="Chat"]').waitFor({ state: 'visible', timeout: 30000 });
    const inputAt = Date.now();
    const deadline = Date.now() + 30000;
    while (welcomeAt === null && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
    if (welcomeAt === null) throw new Error('no welcome frame within 30 s of the click');
    const usableAt = Math.max(inputAt, welcomeAt);
    out.click_to_input_ms = inputAt - c0;
    out.click_to_welcome_ms = welcomeAt - c0;
    out.click_to_usable_ms = usableAt - c0;
    out.requests_until_usable =
      out.load_requests + requests.filter((e) => e.phase === 'click' && e.seen <= usableAt).length + sockets;
    await settle(cdp, inflight);
    const m2 = await metrics(cdp);
    out.click_task_ms = diff(mc, m2).task;
    out.click_script_ms = diff(mc, m2).script;
    out.click_requests = requests.filter((e) => e.phase === 'click').length;
    out.websockets = sockets;
    // The frame must have shared the page's renderer (else throttling and metrics missed it).
    const frame = page.frames().find((f) => f.url().startsWith(`${PARLEY}/frame/`));
    out.frame_in_process = await context.newCDPSession(frame).then(
      () => false,
      () => true,
    );
  } else if (variant === 'livechat') {
    // Without a Rocket.Chat server its bundle asks /api/v1/livechat/config, gets 404 and shows no launcher; the
    // first screen measured is its iframe's first contentful paint.
    const frame = page.frames().find((f) => f.url().startsWith(`${args.livechatOrigin}/livechat`));
    if (frame) {
      const fcp = await frame
        .evaluate(() => {
          const e = performance.getEntriesByName('first-contentful-paint')[0];
          return { origin: performance.timeOrigin, fcp: e ? e.startTime : null };
        })
        .catch(() => null);
      if (fcp && fcp.fcp !== null) out.frame_first_contentful_paint_ms = fcp.origin + fcp.fcp - paint.origin;
      out.frame_in_process = await context.newCDPSession(frame).then(
        () => false,
        () => true,
      );
      out.frame_visible_elements = await frame
        .evaluate(() => [...document.querySelectorAll('body *')].filter((e) => e.getClientRects().length > 0).length)
        .catch(() => 0);
    }
    const api = requests.find((e) => e.url.includes('/api/v1/'));
    // When its bundle has run and asks the server for its config: as far as it gets without a server.
    out.first_api_request_ms = api ? api.seen - t0 : null;
    out.api_404s = requests.filter((e) => e.status === 404).length;
  }
  await settle(cdp, inflight, 200, 5000);
  // Uncaught exceptions in the page or its frames (Rocket.Chat's bundle stops at one: see RESULTS.md).
  out.page_errors = errors.length;
  if (errors.length) out.first_page_error = errors[0].slice(0, 160);
  if (args.screenshots) await page.screenshot({ path: path.join(args.screenshots, `${variant}.png`) });
  const files = {};
  for (const e of requests) {
    const body = e.body ?? Buffer.alloc(0);
    (files[e.phase] ??= []).push({
      url: e.url,
      status: e.status ?? 0,
      raw: body.length,
      gzip: zlib.gzipSync(body, { level: 9 }).length,
      brotli: zlib.brotliCompressSync(body, { params: { [zlib.constants.BROTLI_PARAM_QUALITY]: 11 } }).length,
    });
  }
  await context.close();
  return { out, files };
}

// --- main ----------------------------------------------------------------------------------------------------

async function main() {
  const livechat = startLivechat();
  const livechatPort = await listen(livechat, 'livechat');
  args.livechatOrigin = `http://127.0.0.1:${livechatPort}`;
  const host = startHost(() => args.livechatOrigin);
  const hostPort = await new Promise((resolve, reject) => {
    host.once('error', reject);
    host.listen(HOST_PORT, '127.0.0.1', () => resolve(host.address().port));
  });
  const hostOrigin = `http://localhost:${hostPort}`;
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--disable-site-isolation-trials',
    ],
  });
  const result = { chromium: browser.version(), livechat_version: LIVECHAT_VERSION, throttle: THROTTLE, runs: {}, files: {} };
  try {
    for (const variant of only) {
      result.runs[variant] = [];
      // One warm-up run (disk cache is per context, so it warms only the OS and the servers), then the runs.
      for (let i = 0; i <= RUNS; i++) {
        const { out, files } = await run(browser, variant, hostOrigin);
        if (i === 0) continue;
        log(variant, `run ${i}/${RUNS}`, JSON.stringify(out));
        result.runs[variant].push(out);
        if (i === RUNS) result.files[variant] = files;
      }
      const keys = Object.keys(result.runs[variant][0] ?? {});
      log(variant, 'medians', JSON.stringify(Object.fromEntries(keys.map((k) => [k, median(result.runs[variant].map((r) => Number(r[k])))]))));
    }
  } finally {
    await browser.close();
    host.close();
    livechat.close();
  }
  process.stdout.write(JSON.stringify(result) + '\n');
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
