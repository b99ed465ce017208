// mqtt.js 5 (the library browsers and React Native apps use) against the real tidegate binary
// over WebSocket and WebSocket over TLS. The server runs with `--dev`, so the WSS certificate
// is the development CA's, made at start in a temporary data directory.
//
// Run by scripts/test (`node --test` in this folder); TIDEGATE_BIN names the binary.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import mqtt from 'mqtt';
import WebSocket from 'ws';

const ROOT = path.resolve(import.meta.dirname, '..', '..');
const BIN = process.env.TIDEGATE_BIN ?? path.join(ROOT, 'target', 'debug', 'tidegate');
const TIMEOUT_MS = 5000;

function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

function canConnect(port) {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1');
    socket.once('connect', () => { socket.destroy(); resolve(true); });
    socket.once('error', () => resolve(false));
  });
}

let broker;

before(async () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'tidegate-node-'));
  const ports = { tcp: await freePort(), ws: await freePort(), wss: await freePort() };
  const config = path.join(dir, 'tidegate.toml');
  writeFileSync(config, [
    '[[listeners]]', 'kind = "tcp"', `bind = "127.0.0.1:${ports.tcp}"`,
    '[[listeners]]', 'kind = "ws"', `bind = "127.0.0.1:${ports.ws}"`,
    '[[listeners]]', 'kind = "wss"', `bind = "127.0.0.1:${ports.wss}"`,
    '',
  ].join('\n'));
  const data = path.join(dir, 'data');
  let log = '';
  const child = spawn(BIN, ['serve', '--dev', '--data-dir', data, '--config', config], {
    cwd: dir,
    env: { ...process.env, RUST_LOG: process.env.RUST_LOG ?? 'info', NO_COLOR: '1' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  child.stdout.on('data', (chunk) => { log += chunk; });
  child.stderr.on('data', (chunk) => { log += chunk; });
  const deadline = Date.now() + 15000;
  while (!(await canConnect(ports.tcp))) {
    assert.ok(child.exitCode === null, `tidegate exited:\n${log}`);
    assert.ok(Date.now() < deadline, `tidegate is not listening:\n${log}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  broker = { child, dir, ports, ca: readFileSync(path.join(data, 'dev-tls', 'ca.pem')), log: () => log };
});

after(() => {
  broker?.child.kill('SIGKILL');
  if (broker) rmSync(broker.dir, { recursive: true, force: true });
});

let nextId = 0;

/** The WebSocket mqtt.js opens, kept for the test to inspect (mqtt.js hides it). */
function capturingWebsocket(holder) {
  return (url, protocols, options) => {
    holder.socket = new WebSocket(url, protocols, options.wsOptions);
    return holder.socket;
  };
}

async function connect(kind, options = {}) {
  nextId += 1;
  const common = {
    clientId: `mqttjs-${process.pid}-${nextId}`,
    connectTimeout: TIMEOUT_MS,
    reconnectPeriod: 0,
    ...options,
  };
  const url = kind === 'wss'
    ? `wss://localhost:${broker.ports.wss}/mqtt`
    : `ws://127.0.0.1:${broker.ports.ws}/mqtt`;
  const tls = kind === 'wss' ? { ca: broker.ca, rejectUnauthorized: true } : {};
  return mqtt.connectAsync(url, { ...common, ...tls });
}

function nextMessage(client) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('no message within the timeout')), TIMEOUT_MS);
    client.once('message', (topic, payload, packet) => {
      clearTimeout(timer);
      resolve({ topic, payload, packet });
    });
  });
}

for (const protocolVersion of [4, 5]) {
  test(`mqtt.js v${protocolVersion} over ws: subscribe, publish, receive`, async () => {
    const client = await connect('ws', { protocolVersion });
    try {
      const granted = await client.subscribeAsync(`ws/${protocolVersion}/#`, { qos: 1 });
      assert.equal(granted[0].qos, 1);
      const message = nextMessage(client);
      await client.publishAsync(`ws/${protocolVersion}/a`, 'hello', { qos: 1 });
      const { topic, payload } = await message;
      assert.equal(topic, `ws/${protocolVersion}/a`);
      assert.equal(payload.toString(), 'hello');
    } finally {
      await client.endAsync();
    }
  });
}

test('mqtt.js over wss trusts the --dev CA and shares topics with ws', async () => {
  const secure = await connect('wss', { protocolVersion: 5 });
  const plain = await connect('ws', { protocolVersion: 4 });
  try {
    await secure.subscribeAsync('mixed/#', { qos: 2 });
    const message = nextMessage(secure);
    await plain.publishAsync('mixed/t', 'from ws', { qos: 2 });
    assert.equal((await message).payload.toString(), 'from ws');
    // 200 KB: many TCP segments in, a large frame out, all through TLS.
    const big = Buffer.alloc(200 * 1024, 7);
    const echoed = nextMessage(secure);
    await secure.publishAsync('mixed/big', big, { qos: 1 });
    assert.ok((await echoed).payload.equals(big));
  } finally {
    await secure.endAsync();
    await plain.endAsync();
  }
});

test('a v5 session survives the move from ws to wss', async () => {
  const clientId = `mover-${process.pid}`;
  const options = { protocolVersion: 5, clientId, clean: false, properties: { sessionExpiryInterval: 60 } };
  const first = await connect('ws', options);
  await first.subscribeAsync('move/t', { qos: 1 });
  await first.endAsync();
  const publisher = await connect('ws', { protocolVersion: 4 });
  await publisher.publishAsync('move/t', 'while away', { qos: 1 });
  await publisher.endAsync();
  // The queued message follows the CONNACK at once: listen before connecting.
  const second = mqtt.connect(`wss://localhost:${broker.ports.wss}/mqtt`, {
    ...options, ca: broker.ca, rejectUnauthorized: true, reconnectPeriod: 0, connectTimeout: TIMEOUT_MS,
  });
  try {
    const { payload } = await nextMessage(second);
    assert.equal(payload.toString(), 'while away');
  } finally {
    await second.endAsync();
  }
});

test('an HTTP request without Upgrade gets 426', async () => {
  const response = await fetch(`http://127.0.0.1:${broker.ports.ws}/mqtt`);
  assert.equal(response.status, 426);
  assert.equal(response.headers.get('upgrade'), 'websocket');
  assert.match(await response.text(), /without a WebSocket Upgrade/);
});

// What tidegate answers to the offer of Node's ws (`permessage-deflate; client_max_window_bits`):
// it never keeps its own compression context, and caps the client's window at 1 KiB so that
// the client may keep its context at a small, fixed cost per connection.
const NEGOTIATED = 'permessage-deflate; server_no_context_takeover; client_max_window_bits=10';

test('ws offers permessage-deflate and tidegate accepts it', async () => {
  const socket = new WebSocket(`ws://127.0.0.1:${broker.ports.ws}/mqtt`, 'mqtt');
  const header = new Promise((resolve) => {
    socket.once('upgrade', (response) => resolve(response.headers['sec-websocket-extensions']));
  });
  await new Promise((resolve, reject) => {
    socket.once('open', resolve);
    socket.once('error', reject);
  });
  try {
    assert.equal(await header, NEGOTIATED);
    assert.equal(socket.extensions, 'permessage-deflate');
    assert.equal(socket.protocol, 'mqtt');
  } finally {
    socket.close();
  }
});

test('mqtt.js round trip with compressed frames both ways', async () => {
  const holder = {};
  const client = await connect('ws', { protocolVersion: 5, createWebsocket: capturingWebsocket(holder) });
  try {
    assert.equal(holder.socket.extensions, 'permessage-deflate');
    await client.subscribeAsync('deflate/#', { qos: 1 });
    // ws's private net.Socket counts the bytes that really crossed the wire.
    const tcp = holder.socket._socket;
    const [written, read] = [tcp.bytesWritten, tcp.bytesRead];
    let plain = 0;
    // Several similar messages: the client's zlib keeps its 1 KiB window across them.
    for (let i = 0; i < 5; i += 1) {
      const readings = Array.from({ length: 800 }, (_, k) => ({ sensor: `s-${k % 40}`, t: 20 + ((i + k) % 9), ok: true }));
      const payload = Buffer.from(JSON.stringify(readings));
      plain += payload.length;
      const message = nextMessage(client);
      await client.publishAsync(`deflate/${i}`, payload, { qos: 1 });
      const got = await message;
      assert.equal(got.topic, `deflate/${i}`);
      assert.ok(got.payload.equals(payload), `message ${i} intact`);
    }
    const sent = tcp.bytesWritten - written;
    const received = tcp.bytesRead - read;
    assert.ok(plain > 100_000, `${plain} bytes of payload`);
    assert.ok(sent * 4 < plain, `client to server compressed: ${sent} bytes for ${plain}`);
    assert.ok(received * 4 < plain, `server to client compressed: ${received} bytes for ${plain}`);
  } finally {
    await client.endAsync();
  }
});
