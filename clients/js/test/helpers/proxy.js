// A TCP proxy on 127.0.0.1:0 in front of the host, so a test can cut
// WebSockets the way a dead node or network does (the client sees 1006),
// keep them out for a while, and move to a restarted host on a new port
// while clients keep the same ws_url.

import net from 'node:net';

/**
 * @typedef {object} Proxy
 * @property {number} port
 * @property {string} base `http://127.0.0.1:PORT`
 * @property {(port: number) => void} setTarget where new connections go
 * @property {(blocked: boolean) => void} blockWebSockets refuse (cut) new
 *   WebSocket upgrades while true; plain HTTP still passes
 * @property {() => number} dropWebSockets cut every open WebSocket; the count
 * @property {() => number} freezeWebSockets stop forwarding on every open
 *   WebSocket without closing it (a dead route: nothing arrives, nothing
 *   fails); the count
 * @property {() => number} webSocketCount open WebSockets through the proxy
 * @property {() => Promise<void>} close
 */

const UPGRADE = /^upgrade:\s*websocket/im;

/**
 * @param {number} targetPort
 * @returns {Promise<Proxy>}
 */
export async function startProxy(targetPort) {
  let target = targetPort;
  let blocked = false;
  /** @type {Set<{client: net.Socket, upstream: net.Socket, ws: boolean}>} */
  const pairs = new Set();

  const server = net.createServer((client) => {
    const upstream = net.connect(target, '127.0.0.1');
    const pair = { client, upstream, ws: false };
    pairs.add(pair);
    const end = () => {
      pairs.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    for (const socket of [client, upstream]) {
      socket.on('error', end);
      socket.on('close', end);
    }
    // Look at every request, not just the first: a client may send its
    // upgrade on a keep-alive connection that carried plain HTTP before.
    client.on('data', (chunk) => {
      if (!pair.ws && UPGRADE.test(chunk.toString('latin1'))) {
        if (blocked) return end();
        pair.ws = true;
      }
      upstream.write(chunk);
    });
    upstream.pipe(client);
  });
  await new Promise((done) => server.listen(0, '127.0.0.1', () => done(undefined)));
  const address = /** @type {net.AddressInfo} */ (server.address());
  return {
    port: address.port,
    base: `http://127.0.0.1:${address.port}`,
    setTarget(port) {
      target = port;
    },
    blockWebSockets(value) {
      blocked = value;
    },
    dropWebSockets() {
      let count = 0;
      for (const pair of [...pairs]) {
        if (!pair.ws) continue;
        count++;
        pair.client.destroy();
        pair.upstream.destroy();
        pairs.delete(pair);
      }
      return count;
    },
    freezeWebSockets() {
      let count = 0;
      for (const pair of pairs) {
        if (!pair.ws) continue;
        count++;
        pair.client.removeAllListeners('data');
        pair.upstream.unpipe(pair.client);
        pair.client.pause();
        pair.upstream.pause();
      }
      return count;
    },
    webSocketCount() {
      return [...pairs].filter((pair) => pair.ws).length;
    },
    async close() {
      for (const pair of pairs) {
        pair.client.destroy();
        pair.upstream.destroy();
      }
      await new Promise((done) => server.close(() => done(undefined)));
    },
  };
}
