/*! Parley chat loader.
 * Embedded on customer pages as: <script src="https://CHAT/widget.js" data-site="SITE_KEY" async></script>
 * Optional: data-preload="idle" (load the chat frame when the browser is idle), data-position="left".
 *
 * Until the visitor shows intent (pointer over, focus on or click of the launcher, or Parley('open')), this script
 * only draws the launcher: no cookie, no storage, no connection. Then it creates the chat iframe on the chat origin
 * and talks to it by postMessage with exact origins (and checks event.source) both ways.
 *
 * Everything lives in an open shadow root on a <parley-chat> element, so page CSS cannot break it. Styles are a
 * constructed stylesheet (adoptedStyleSheets: CSSOM, not subject to CSP style-src); only browsers without it fall back
 * to a <style> element, which a strict style-src allows only via the script tag's nonce (copied) or 'unsafe-inline'.
 * No inline style attributes, no innerHTML (Trusted Types safe). Theme with `--parley-accent` on the page.
 *
 * Page API (calls made before load are queued by the stub below or by the page's own snippet
 * `window.Parley=window.Parley||function(){(Parley.q=Parley.q||[]).push(arguments)}`):
 *   Parley('open') · Parley('close') · Parley('toggle') · Parley('on', 'ready'|'unread'|'message', fn)
 *   Parley('identify', {id, name, email, hash}) (see README)
 */
(() => {
  const w = window;
  const d = document;
  const script = d.currentScript;
  if (!script || (w.Parley && w.Parley.loaded)) return;
  const site = script.getAttribute('data-site');
  if (!site) return console.warn('Parley: data-site is missing');
  const ORIGIN = new URL(script.src, location.href).origin;
  const P = (w.Parley = w.Parley || function () { (P.q = P.q || []).push(arguments); });

  const handlers = { ready: [], unread: [], message: [] };
  const warned = {};
  let wrap, btn, badge, frame;
  let frameReady = false, isOpen = false, wantOpen = false, unread = 0, ident = null;

  const CSS =
    ':host{all:initial!important}' +
    '.l{position:fixed;z-index:2147483647;bottom:20px;right:20px;width:56px;height:56px;margin:0;padding:0;border:0;border-radius:50%;' +
    'background:var(--parley-accent,#2563eb);color:var(--parley-accent-text,#fff);cursor:pointer;display:flex;align-items:center;' +
    'justify-content:center;box-shadow:0 4px 14px rgba(0,0,0,.25)}' +
    '.l:focus-visible{outline:3px solid var(--parley-accent,#2563eb);outline-offset:3px}' +
    '.l svg{width:28px;height:28px;fill:currentColor}' +
    '.n{position:fixed;z-index:2147483647;bottom:60px;right:16px;min-width:20px;pointer-events:none;height:20px;padding:0 6px;box-sizing:border-box;border-radius:10px;' +
    'background:#d92d20;color:#fff;font:600 12px/20px system-ui,sans-serif;text-align:center}' +
    '.n[hidden],.f{display:none}' +
    '.o .f{display:block;position:fixed;z-index:2147483647;bottom:88px;right:20px;width:380px;height:min(640px,calc(100vh - 108px));' +
    'border:0;border-radius:16px;background:#fff;box-shadow:0 12px 40px rgba(0,0,0,.25)}' +
    '.left .l,.left .f{right:auto;left:20px}.left .n{right:auto;left:60px}' +
    '@media (max-width:640px){.o .f{inset:0;width:100%;height:100%;height:100dvh;border-radius:0}.o .l,.o .n{display:none}}' +
    '@media (prefers-reduced-motion:no-preference){.l{transition:transform .15s}.l:hover{transform:scale(1.06)}}';

  const el = (tag, cls) => {
    const e = d.createElement(tag);
    if (cls) e.className = cls;
    return e;
  };

  const emit = (type, arg) => {
    for (const fn of handlers[type]) {
      try { fn(arg); } catch (e) { console.error(e); }
    }
  };

  const post = (msg) => {
    msg.parley = 1;
    if (frame && frame.contentWindow) frame.contentWindow.postMessage(msg, ORIGIN);
  };

  const render = () => {
    wrap.className = 'w' + (isOpen ? ' o' : '') + (script.getAttribute('data-position') === 'left' ? ' left' : '');
    btn.setAttribute('aria-expanded', String(isOpen));
    btn.setAttribute('aria-label', isOpen ? 'Hide chat' : 'Open chat');
    badge.hidden = !unread;
    badge.textContent = unread > 99 ? '99+' : String(unread);
    badge.setAttribute('aria-label', unread + ' unread messages');
  };

  // Creates the (hidden) chat frame; the frame connects to the chat server itself.
  const load = () => {
    if (frame) return;
    frame = el('iframe', 'f');
    frame.title = 'Chat';
    frame.src = ORIGIN + '/frame/' + encodeURIComponent(site) + '#host=' + encodeURIComponent(location.origin);
    wrap.appendChild(frame);
  };

  const open = () => {
    wantOpen = true;
    load();
    if (!frameReady || isOpen) return;
    isOpen = true;
    render();
    frame.focus();
    post({ type: 'open' });
  };

  const close = (returnFocus) => {
    wantOpen = false;
    if (!isOpen) return;
    const hadFocus = wrap.getRootNode().activeElement === frame;
    isOpen = false;
    render();
    post({ type: 'close' });
    if (returnFocus || hadFocus) btn.focus();
  };

  const api = function (cmd, a, b) {
    try {
      if (cmd === 'open') open();
      else if (cmd === 'close') close();
      else if (cmd === 'toggle') wantOpen || isOpen ? close() : open();
      // The logged-in customer; `hash` = hex HMAC-SHA256 of `id` under the site's identity secret, made by the
      // customer's backend. Kept in memory only, handed to the frame with `init` and again when it changes;
      // Parley('identify', null) signs out.
      else if (cmd === 'identify') {
        ident = a || null;
        if (frameReady) post({ type: 'identify', identity: ident });
      }
      else if (cmd === 'on' && handlers[a] && typeof b === 'function') {
        handlers[a].push(b);
        if (a === 'ready') b();
      } else if (!warned[cmd + a]) {
        warned[cmd + a] = 1;
        console.warn('Parley: unknown command', cmd);
      }
    } catch (e) {
      console.error(e);
    }
  };

  w.addEventListener('message', (e) => {
    if (!frame || e.source !== frame.contentWindow || e.origin !== ORIGIN) return;
    const m = e.data;
    if (!m || m.parley !== 1) return;
    if (m.type === 'ready') {
      frameReady = true;
      post({ type: 'init', page_url: location.href, referrer: d.referrer, identity: ident });
      if (isOpen) post({ type: 'open' });
      else if (wantOpen) open();
    } else if (m.type === 'unread') {
      unread = Math.max(0, m.count | 0);
      render();
      emit('unread', unread);
    } else if (m.type === 'message' && m.message) {
      const { author, name, body } = m.message;
      emit('message', { author, name, body });
    } else if (m.type === 'close') {
      close(true);
    }
  });

  const setup = () => {
    const hostEl = d.createElement('parley-chat');
    const root = hostEl.attachShadow({ mode: 'open' });
    if (root.adoptedStyleSheets && w.CSSStyleSheet && 'replaceSync' in CSSStyleSheet.prototype) {
      const sheet = new CSSStyleSheet();
      sheet.replaceSync(CSS);
      root.adoptedStyleSheets = [sheet];
    } else {
      const style = el('style');
      if (script.nonce) style.nonce = script.nonce;
      style.textContent = CSS;
      root.appendChild(style);
    }
    wrap = el('div');
    btn = el('button', 'l');
    btn.type = 'button';
    const NS = 'http://www.w3.org/2000/svg';
    const svg = d.createElementNS(NS, 'svg');
    svg.setAttribute('viewBox', '0 0 24 24');
    svg.setAttribute('aria-hidden', 'true');
    const path = d.createElementNS(NS, 'path');
    path.setAttribute('d', 'M4 4h16a2 2 0 0 1 2 2v10a2 2 0 0 1-2 2H9l-5 4v-4a2 2 0 0 1-2-2V6a2 2 0 0 1 2-2z');
    svg.appendChild(path);
    btn.appendChild(svg);
    badge = el('span', 'n');
    badge.setAttribute('role', 'img');
    btn.addEventListener('pointerenter', load);
    btn.addEventListener('focus', load);
    btn.addEventListener('click', () => (isOpen ? close() : open()));
    btn.addEventListener('keydown', (e) => e.key === 'Escape' && close());
    wrap.append(btn, badge);
    root.appendChild(wrap);
    render();
    d.body.appendChild(hostEl);

    if (script.getAttribute('data-preload') === 'idle') (w.requestIdleCallback || setTimeout)(load);

    const queued = P.q || [];
    w.Parley = api;
    api.loaded = true;
    for (const args of queued) api.apply(null, args);
  };

  // Set up once the document is parsed, so host handlers called on 'ready' can find the page's elements.
  if (d.readyState !== 'loading') setup();
  else d.addEventListener('DOMContentLoaded', setup);
})();
