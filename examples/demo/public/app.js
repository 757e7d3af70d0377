// The demo page: asks its back-end for a token (one per tab), connects with
// the madx-pusher client, submits jobs, and shows each result as it is
// pushed.

import { MadxClient } from '/client/index.js';

/** @returns {Promise<import('/client/client.js').Token>} */
async function fetchToken() {
  const response = await fetch('/api/token', { method: 'POST' });
  if (!response.ok) throw new Error(`token: ${response.status} ${await response.text()}`);
  return response.json();
}

const jobs = /** @type {HTMLTableSectionElement} */ (document.getElementById('jobs'));
const pushes = /** @type {HTMLOListElement} */ (document.getElementById('pushes'));
const connection = /** @type {HTMLElement} */ (document.getElementById('connection'));
const form = /** @type {HTMLFormElement} */ (document.getElementById('job-form'));
const ORDER = { queued: 0, running: 1, done: 2, failed: 2 };

/** Show a job, never moving it back (a reload may race a push). */
function show(job) {
  jobs.querySelector('tr.empty')?.remove();
  let row = /** @type {HTMLTableRowElement | null} */ (jobs.querySelector(`tr[data-job="${job.id}"]`));
  if (row && ORDER[row.dataset.status] > ORDER[job.status]) return;
  if (!row) {
    row = document.createElement('tr');
    row.dataset.job = String(job.id);
    const later = [...jobs.rows].find((r) => Number(r.dataset.job) < job.id);
    jobs.insertBefore(row, later || null); // newest first
  }
  row.dataset.status = job.status;
  const what = job.kind === 'primes' ? `primes up to ${job.n}` : `Fibonacci(${job.n})`;
  row.replaceChildren(...[job.id, `${what}, ${job.seconds} s`, '', job.result || ''].map((text) => {
    const cell = document.createElement('td');
    cell.textContent = String(text);
    return cell;
  }));
  const badge = document.createElement('span');
  badge.className = `status status-${job.status}`;
  badge.textContent = job.status;
  row.cells[2].append(badge);
}

/** Load every job of this user from the back-end (after a history gap). */
async function reload() {
  const response = await fetch('/api/jobs');
  if (response.ok) for (const job of await response.json()) show(job);
}

/** @param {string} text @param {Record<string, string>} data @param {string} [className] */
function logLine(text, data, className) {
  const item = document.createElement('li');
  item.textContent = `${new Date().toLocaleTimeString()}  ${text}`;
  Object.assign(item.dataset, data);
  if (className) item.className = className;
  pushes.prepend(item);
}

const client = new MadxClient(await fetchToken(), { refreshToken: fetchToken });

client.onState(({ current, code, delayMs }) => {
  connection.dataset.state = current;
  connection.textContent = current === 'reconnecting' && delayMs !== undefined
    ? `reconnecting in ${(delayMs / 1000).toFixed(1)} s${code ? ` (${code})` : ''}`
    : current;
});
for (const event of ['job.started', 'job.done', 'job.failed']) {
  client.on(event, (job, message) => {
    show(job);
    logLine(`#${message.id} ${event} job ${job.id}`, { id: message.id, event, job: String(job.id) });
  });
}
client.onGap(() => {
  logLine('history did not reach back: reloading jobs', {}, 'gap');
  reload();
});

form.addEventListener('submit', async (event) => {
  event.preventDefault();
  const fields = new FormData(form);
  const response = await fetch('/api/jobs', {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ kind: fields.get('kind'), n: Number(fields.get('n')), seconds: Number(fields.get('seconds')) }),
  });
  const answer = await response.json();
  if (!response.ok) return alert(answer.error);
  show(answer);
});

await client.connect();
await reload();
