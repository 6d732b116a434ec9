// Preloaded (`node --require`) into every engine process the network test starts, and into their
// worker threads (which inherit the preload): replaces every way Node has to reach the network with
// a function that records the attempt to TITAN_NET_LOG and throws. Also records each thread it was
// loaded into, so the test can tell the hooks were in place where the work ran.
/* eslint-disable @typescript-eslint/no-require-imports -- a CommonJS preload */
'use strict';
const fs = require('node:fs');
const { threadId } = require('node:worker_threads');

const log = process.env.TITAN_NET_LOG;
const note = (entry) => {
  if (log) fs.appendFileSync(log, JSON.stringify({ pid: process.pid, threadId, ...entry }) + '\n');
};
note({ loaded: true });

function block(owner, name, label) {
  if (!owner || typeof owner[name] !== 'function') return;
  const original = owner[name];
  owner[name] = function blocked(...args) {
    const target = args.map((a) => (typeof a === 'string' || typeof a === 'number' ? String(a) : a && typeof a === 'object' ? (a.href || a.host || a.hostname || a.path || a.url || '') : '')).filter(Boolean).join(' ');
    note({ call: label, target: String(target).slice(0, 200), stack: new Error().stack.split('\n').slice(2, 8).join(' | ') });
    throw new Error(`network access blocked by the test: ${label}(${target})`);
  };
  owner[name].original = original;
}

const net = require('node:net');
block(net, 'connect', 'net.connect');
block(net, 'createConnection', 'net.createConnection');
block(net.Socket.prototype, 'connect', 'net.Socket#connect');
block(net, 'createServer', 'net.createServer');
const tls = require('node:tls');
block(tls, 'connect', 'tls.connect');
for (const mod of ['node:http', 'node:https']) {
  const m = require(mod);
  block(m, 'request', `${mod.slice(5)}.request`);
  block(m, 'get', `${mod.slice(5)}.get`);
  block(m, 'createServer', `${mod.slice(5)}.createServer`);
}
const http2 = require('node:http2');
block(http2, 'connect', 'http2.connect');
const dgram = require('node:dgram');
block(dgram, 'createSocket', 'dgram.createSocket');
const dns = require('node:dns');
for (const name of ['lookup', 'lookupService', 'resolve', 'resolve4', 'resolve6', 'resolveAny', 'resolveCname', 'resolveMx', 'resolveNs', 'resolveTxt', 'resolveSrv', 'reverse']) {
  block(dns, name, `dns.${name}`);
  block(dns.promises, name, `dns.promises.${name}`);
}
block(dns.Resolver && dns.Resolver.prototype, 'resolve', 'dns.Resolver#resolve');
block(globalThis, 'fetch', 'fetch');
if (typeof globalThis.WebSocket === 'function') {
  globalThis.WebSocket = function WebSocket(url) {
    note({ call: 'WebSocket', target: String(url) });
    throw new Error(`network access blocked by the test: WebSocket(${url})`);
  };
}
if (typeof globalThis.EventSource === 'function') block(globalThis, 'EventSource', 'EventSource');
try {
  const undici = require('undici');
  for (const name of ['fetch', 'request', 'stream', 'pipeline', 'connect']) block(undici, name, `undici.${name}`);
  for (const cls of ['Client', 'Pool', 'Agent']) block(undici[cls] && undici[cls].prototype, 'dispatch', `undici.${cls}#dispatch`);
} catch {
  // undici not installed as its own package: Node's fetch is hooked above
}
