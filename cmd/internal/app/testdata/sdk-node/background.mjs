// The official openai Node SDK's responses.create({background: true}) and
// responses.retrieve, unmodified but for its base URL, against edgecache
// with edge jobs enabled on /v1/responses. TestBackgroundJobsNodeSDK
// (../../jobs_test.go) starts edgecache and llmsim and runs this script.
//
// Environment:
//   EDGECACHE_BASE_URL  edgecache's OpenAI base URL (required)
//
// Prints one line per check, "ok NAME" or "FAIL NAME: why", and exits 1 if
// any check failed.

import { createHash, randomUUID } from 'node:crypto';
import OpenAI from 'openai';

const baseURL = process.env.EDGECACHE_BASE_URL;
if (!baseURL) {
  console.log('FAIL setup: EDGECACHE_BASE_URL is not set');
  process.exit(2);
}
const client = new OpenAI({ baseURL, apiKey: 'sk-edgecache-bg-owner' });
const other = new OpenAI({ baseURL, apiKey: 'sk-edgecache-bg-other', maxRetries: 0 });
const prompt = `a long essay (node background run ${randomUUID()})`;
const marker = 'sim:' + createHash('sha256').update(prompt).digest('hex').slice(0, 12);

let failed = 0;
let passed = 0;
async function check(name, fn) {
  try {
    await fn();
    console.log(`ok ${name}`);
    passed++;
  } catch (e) {
    console.log(`FAIL ${name}: ${e?.stack ?? e}`);
    failed++;
  }
}
function expect(cond, msg) {
  if (!cond) throw new Error(msg);
}
async function notFound(p, what) {
  try {
    await p;
  } catch (e) {
    expect(e instanceof OpenAI.NotFoundError && e.status === 404, `${what}: ${e}, want 404`);
    return;
  }
  throw new Error(`${what}: succeeded, want 404`);
}

let id = '';
await check('create background', async () => {
  const r = await client.responses.create({ model: 'gpt-4o-mini', input: prompt, background: true });
  expect(r.status === 'queued' || r.status === 'in_progress', `status ${r.status}, want queued`);
  expect(r.id.startsWith('resp_'), `id ${r.id}`);
  expect(r.background === true, 'background is not true');
  id = r.id;
});
await check('retrieve until completed', async () => {
  let r;
  for (let i = 0; i < 600; i++) {
    r = await client.responses.retrieve(id);
    if (r.status === 'completed') break;
    expect(['queued', 'in_progress'].includes(r.status), `status ${r.status}`);
    await new Promise((res) => setTimeout(res, 50));
  }
  expect(r.status === 'completed', `status ${r.status} after polling`);
  expect(r.id === id, `id ${r.id}, want ${id}`);
  expect(r.output_text.startsWith(marker + ' '), `text ${JSON.stringify(r.output_text)} does not start with ${marker}`);
});
await check('another key gets 404', async () => {
  await notFound(other.responses.retrieve(id), 'retrieve');
  await notFound(other.responses.cancel(id), 'cancel');
  await notFound(other.responses.delete(id), 'delete');
});
await check('delete', async () => {
  await client.responses.delete(id);
  await notFound(client.responses.retrieve(id), 'retrieve after delete');
});
if (failed) {
  console.log(`${failed} of ${failed + passed} checks failed`);
  process.exit(1);
}
console.log(`all ${passed} checks passed`);
