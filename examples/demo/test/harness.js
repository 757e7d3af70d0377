// Everything the browser test (and the screenshot script) runs for real:
// the madx-pusher binary, a TCP proxy in front of it (to cut WebSockets and
// to survive a host restart on a new port), the demo back-end, and Debian's
// Chromium driven by playwright-core. All on 127.0.0.1:0; stop() (or the
// test process ending) kills every process started here.

import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { chromium } from 'playwright-core';

import { startHost, track, waitForLine } from '../../../clients/js/test/helpers/host.js';
import { startProxy } from '../../../clients/js/test/helpers/proxy.js';

const here = dirname(fileURLToPath(import.meta.url));
const CHROMIUM = process.env.CHROMIUM_BIN || '/usr/bin/chromium';
const CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync'];

export async function startStack() {
  /** @type {Array<() => Promise<unknown> | void>} undone in reverse on stop */
  const cleanups = [];
  const stop = async () => {
    for (const cleanup of cleanups.reverse()) await cleanup();
  };
  try {
    let host = await startHost();
    cleanups.push(() => host.stop());
    const proxy = await startProxy(host.port);
    cleanups.push(() => proxy.close());

    const demo = track(spawn(process.execPath, [join(here, '../server.js')], {
      env: { ...process.env, MADX_URL: proxy.base, PORT: '0' },
      stdio: ['ignore', 'pipe', 'inherit'],
    }));
    cleanups.push(() => {
      demo.kill('SIGKILL');
    });
    const [, demoUrl] = await waitForLine(demo, /demo listening on (http:\/\/\S+)/, () => 'demo server');

    const profile = mkdtempSync(join(tmpdir(), 'madx-chromium-'));
    cleanups.push(() => rmSync(profile, { recursive: true, force: true }));
    const browser = await chromium.launchPersistentContext(profile, {
      executablePath: CHROMIUM,
      headless: true,
      args: CHROMIUM_ARGS,
      viewport: { width: 960, height: 720 },
    });
    cleanups.push(() => browser.close());

    return {
      proxy,
      demoUrl,
      browser,
      stop,
      get host() {
        return host;
      },
      /** Kill the pusher (as a crash would) and start a new one behind the proxy. */
      async killHost() {
        await host.stop('SIGKILL');
      },
      async startNewHost() {
        host = await startHost();
        proxy.setTarget(host.port);
      },
      /** A new tab with the demo page, connected. */
      async openDemo() {
        const page = await browser.newPage();
        page.on('pageerror', (error) => console.error('page error:', error));
        await page.goto(demoUrl);
        await page.locator('#connection[data-state="connected"]').waitFor();
        return page;
      },
    };
  } catch (error) {
    await stop();
    throw error;
  }
}

/**
 * Submit a job through the page's form; the job as the back-end queued it.
 * @param {import('playwright-core').Page} page
 * @param {{kind?: string, n: number, seconds: number}} job
 */
export async function submitJob(page, { kind = 'primes', n, seconds }) {
  await page.selectOption('select[name="kind"]', kind);
  await page.fill('input[name="n"]', String(n));
  await page.fill('input[name="seconds"]', String(seconds));
  const [response] = await Promise.all([
    page.waitForResponse((r) => r.url().endsWith('/api/jobs') && r.request().method() === 'POST'),
    page.click('button[type="submit"]'),
  ]);
  return response.json();
}
