// The benchmark's Node peer: what a team would write itself with Socket.IO. It speaks Parley's JSON frames inside
// Socket.IO events named "msg" (visitors connect with ?role=visitor, agents with ?role=agent) and answers them the
// way Parley does: welcome (with the events after last_seq), ack, the visitor's own event echoed, and a summary and
// an event to every agent. With --db FILE each message is first written with better-sqlite3 (WAL,
// synchronous=FULL, one transaction per message) and acked only after the commit.
//
// Usage: node server.js --port PORT [--db FILE]

"use strict";

const http = require("node:http");
const crypto = require("node:crypto");
const { Server } = require("socket.io");

const args = process.argv.slice(2);
const arg = (name) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : undefined;
};
const port = Number(arg("--port") || 3100);
const dbFile = arg("--db");

let persist = null;
if (dbFile) {
  const Database = require("better-sqlite3");
  const db = new Database(dbFile);
  db.pragma("journal_mode = WAL");
  db.pragma("synchronous = FULL");
  db.exec(`create table if not exists messages (
    id text primary key, conversation text not null, seq integer not null, client_id text not null,
    body text not null, created_at integer not null, unique (conversation, client_id))`);
  const insert = db.prepare(
    "insert into messages (id, conversation, seq, client_id, body, created_at) values (?, ?, ?, ?, ?, ?)",
  );
  persist = db.transaction((m) => insert.run(m.id, m.conversation, m.seq, m.client_id, m.body, m.created_at));
}

// token -> { events: [...], acks: Map(client_id -> {message_id, seq}) }
const conversations = new Map();
const newId = () => crypto.randomBytes(16).toString("hex");

const server = http.createServer();
const io = new Server(server, { transports: ["websocket"], perMessageDeflate: false, serveClient: false });

io.on("connection", (socket) => {
  const role = socket.handshake.query.role;
  if (role === "agent") {
    socket.join("agents");
    socket.emit("msg", { type: "inbox", agent: { id: "a", name: "Bench", email: "b@x" }, conversations: [] });
    return;
  }
  let token = null;
  socket.on("msg", (frame) => {
    if (!frame || typeof frame !== "object") return;
    if (frame.type === "hello") {
      token = frame.token || newId();
      if (!conversations.has(token)) conversations.set(token, { events: [], acks: new Map() });
      const c = conversations.get(token);
      const from = frame.last_seq > c.events.length ? 0 : frame.last_seq || 0;
      socket.emit("msg", {
        type: "welcome", token, events: c.events.slice(from), last_seq: c.events.length, agent_read_seq: 0,
        reset: false,
      });
    } else if (frame.type === "send" && token) {
      const c = conversations.get(token);
      const known = c.acks.get(frame.client_id);
      if (known) {
        socket.emit("msg", { type: "ack", client_id: frame.client_id, message_id: known.message_id, seq: known.seq });
        return;
      }
      const seq = c.events.length + 1;
      const now = Date.now();
      const message = {
        id: newId(), client_id: frame.client_id, author: { role: "visitor" }, body: frame.body, sent_at: now,
        channel: "web",
      };
      if (persist) {
        persist({ id: message.id, conversation: token, seq, client_id: frame.client_id, body: frame.body, created_at: now });
      }
      const event = { seq, at: now, type: "message", message };
      c.events.push(event);
      c.acks.set(frame.client_id, { message_id: message.id, seq });
      socket.emit("msg", { type: "ack", client_id: frame.client_id, message_id: message.id, seq });
      socket.emit("msg", { type: "event", event });
      const summary = {
        id: token, site_key: "bench", site_name: "Bench", visitor_name: "Visitor", status: "open",
        last_message: frame.body, last_activity_at: now, unread: 1, last_seq: seq,
      };
      io.to("agents").emit("msg", { type: "summary", conversation: summary });
      io.to("agents").emit("msg", { type: "event", conversation_id: token, event });
    } else if (frame.type === "ping") {
      socket.emit("msg", { type: "pong" });
    }
  });
});

server.listen(port, "127.0.0.1");
