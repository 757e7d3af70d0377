// The worker: runs queued jobs one after another and pushes each result to
// the user who asked, through madx-pusher (POST /v1/publish with user_id).
// Running jobs strictly in order is also what keeps SQL sequences in order
// without table locks. In production this is its own process reading a
// durable queue (examples/worker/ uses SQLite); here it shares the demo's
// process and an in-memory array to stay small.

/**
 * @typedef {object} Job
 * @property {number} id
 * @property {string} user
 * @property {'primes' | 'fibonacci'} kind
 * @property {number} n
 * @property {number} seconds simulated slow work
 * @property {'queued' | 'running' | 'done' | 'failed'} status
 * @property {string} [result]
 * @property {string} submitted_at ISO time
 * @property {string} [finished_at] ISO time
 */

export class Worker {
  /**
   * @param {{url: string, key: string, secret: string}} pusher
   */
  constructor(pusher) {
    this.pusher = pusher;
    /** @type {Job[]} every job, in submission order */
    this.jobs = [];
    this.running = false;
  }

  /**
   * Queue a job (what the web app does in its request handler) and return
   * at once.
   * @param {Omit<Job, 'id' | 'status' | 'submitted_at'>} spec
   * @returns {Job}
   */
  enqueue(spec) {
    /** @type {Job} */
    const job = { ...spec, id: this.jobs.length + 1, status: 'queued', submitted_at: new Date().toISOString() };
    this.jobs.push(job);
    this.drain();
    return job;
  }

  /** Run queued jobs one after another until none is left. */
  async drain() {
    if (this.running) return;
    this.running = true;
    try {
      for (let job; (job = this.jobs.find((j) => j.status === 'queued'));) {
        job.status = 'running';
        await this.push(job.user, 'job.started', job);
        try {
          await sleep(job.seconds * 1000);
          job.result = run(job);
          job.status = 'done';
        } catch (error) {
          job.result = String(error);
          job.status = 'failed';
        }
        job.finished_at = new Date().toISOString();
        await this.push(job.user, `job.${job.status}`, job);
      }
    } finally {
      this.running = false;
    }
  }

  /**
   * POST /v1/publish to the user's inbox. Retries while the pusher is
   * unreachable or failing (a restart, say), so no result is dropped.
   * @param {string} user
   * @param {string} event
   * @param {Job} job
   */
  async push(user, event, job) {
    const auth = `Basic ${Buffer.from(`${this.pusher.key}:${this.pusher.secret}`).toString('base64')}`;
    const body = JSON.stringify({ user_id: user, event, data: job });
    for (let attempt = 0; ; attempt++) {
      try {
        const response = await fetch(`${this.pusher.url}/v1/publish`, {
          method: 'POST',
          headers: { authorization: auth, 'content-type': 'application/json' },
          body,
        });
        if (response.ok) return;
        if (response.status < 500 && response.status !== 429) {
          console.error(`publish of job ${job.id} refused: ${response.status} ${await response.text()}`);
          return;
        }
      } catch {
        // unreachable: retry below
      }
      if (attempt === 600) {
        console.error(`publish of job ${job.id} given up`);
        return;
      }
      await sleep(Math.min(2000, 100 * 2 ** attempt));
    }
  }
}

/**
 * The work itself.
 * @param {Job} job
 * @returns {string}
 */
function run({ kind, n }) {
  if (kind === 'primes') {
    const composite = new Uint8Array(n + 1);
    let count = 0;
    for (let i = 2; i <= n; i++) {
      if (composite[i]) continue;
      count++;
      for (let j = i * i; j <= n; j += i) composite[j] = 1;
    }
    return `${count} primes up to ${n}`;
  }
  let [a, b] = [0n, 1n];
  for (let i = 0; i < n; i++) [a, b] = [b, a + b];
  const digits = a.toString();
  return digits.length > 30 ? `F(${n}) = ${digits.slice(0, 12)}…${digits.slice(-12)} (${digits.length} digits)` : `F(${n}) = ${digits}`;
}

/** @param {number} ms */
const sleep = (ms) => new Promise((done) => setTimeout(done, ms));
