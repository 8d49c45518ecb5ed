// The official Anthropic Node SDK (@anthropic-ai/sdk), unmodified but for
// its base URL, against edgecache in front of llmsim. TestNodeSDKAnthropic
// (../../sdk_anthropic_test.go) starts both and runs this script:
//
//   EDGECACHE_BASE_URL=http://127.0.0.1:8080 node anthropic.mjs
//
// Prints one line per check, "ok NAME" or "FAIL NAME: why", and exits 1 if
// any check failed.

import { createHash, randomUUID } from 'node:crypto';
import Anthropic from '@anthropic-ai/sdk';

const baseURL = process.env.EDGECACHE_BASE_URL;
if (!baseURL) {
  console.log('FAIL setup: EDGECACHE_BASE_URL is not set');
  process.exit(2);
}
const expectWords = Number(process.env.EDGECACHE_EXPECT_WORDS ?? 0);
const client = new Anthropic({ baseURL, apiKey: 'sk-ant-edgecache-node-test', maxRetries: 0 });
const MODEL = 'claude-sonnet-4-5';
const run = randomUUID();
const prompt = (what) => `${what} (anthropic node sdk run ${run})`;
const marker = (text) => 'sim:' + createHash('sha256').update(text).digest('hex').slice(0, 12);

class CheckError extends Error {}
function expect(cond, msg) {
  if (!cond) throw new CheckError(msg);
}
const status = (response) => response.headers.get('cache-status') ?? '';
function expectMiss(response, what) {
  const cs = status(response);
  expect(cs.startsWith('edgecache; fwd=uri-miss'), `${what}: cache-status ${JSON.stringify(cs)}, want a miss`);
}
function expectHit(response, what) {
  const cs = status(response);
  expect(cs.startsWith('edgecache; hit; detail=l1'), `${what}: cache-status ${JSON.stringify(cs)}, want a hit`);
}
function expectAnswer(text, p, what) {
  expect(text.startsWith(marker(p) + ' '), `${what}: answer ${JSON.stringify(text)} does not start with ${marker(p)}`);
  if (expectWords) {
    expect(text.split(/\s+/).length === expectWords, `${what}: answer ${JSON.stringify(text)} has the wrong word count`);
  }
}
const params = (p, { system = 'You are terse.', model = MODEL } = {}) => ({
  model, max_tokens: 256, system, messages: [{ role: 'user', content: p }],
});
const textOf = (m) => m.content.filter((b) => b.type === 'text').map((b) => b.text).join('');

async function create(p, opts, c = client) {
  const { data, response } = await c.messages.create(params(p, opts)).withResponse();
  expect(data.stop_reason, 'no stop_reason');
  return { text: textOf(data), response };
}
async function stream(p, opts) {
  const s = client.messages.stream(params(p, opts));
  let deltas = '';
  s.on('text', (t) => { deltas += t; });
  const { response } = await s.withResponse();
  const m = await s.finalMessage();
  expect(m.stop_reason, 'no stop_reason in the final message');
  expect(deltas === textOf(m), `text events ${JSON.stringify(deltas)} differ from the final message`);
  return { text: textOf(m), response };
}

const checks = [];
for (const [missStream, hitStream] of [[false, false], [false, true], [true, false], [true, true]]) {
  const name = `miss ${missStream ? 'stream' : 'create'} then hit ${hitStream ? 'stream' : 'create'}`;
  checks.push([name, async () => {
    const p = prompt(name);
    const miss = missStream ? await stream(p) : await create(p);
    expectMiss(miss.response, name + ' (miss)');
    expectAnswer(miss.text, p, name + ' (miss)');
    const hit = hitStream ? await stream(p) : await create(p);
    expectHit(hit.response, name + ' (hit)');
    expect(hit.text === miss.text, `${name}: hit ${JSON.stringify(hit.text)} differs from miss ${JSON.stringify(miss.text)}`);
  }]);
}
checks.push(['another key, system prompt or model misses', async () => {
  const p = prompt('variants');
  const other = new Anthropic({ baseURL, apiKey: 'sk-ant-another-node-key', maxRetries: 0 });
  const base = await create(p);
  expectMiss(base.response, 'base');
  expectMiss((await create(p, {}, other)).response, 'another key');
  expectMiss((await create(p, { system: 'You are verbose.' })).response, 'another system prompt');
  expectMiss((await create(p, { model: 'claude-haiku-4-5' })).response, 'another model');
}]);
checks.push(['bad input is a 400 in Anthropic\'s shape', async () => {
  try {
    await client.messages.create({ model: MODEL, max_tokens: 5, messages: [] });
  } catch (e) {
    expect(e instanceof Anthropic.BadRequestError, `got ${e}`);
    expect(e.error?.type === 'error' && e.error?.error?.type === 'invalid_request_error', `body ${JSON.stringify(e.error)}`);
    return;
  }
  throw new CheckError('no error');
}]);

let failed = 0;
for (const [name, fn] of checks) {
  try {
    await fn();
    console.log(`ok ${name}`);
  } catch (e) {
    failed++;
    console.log(`FAIL ${name}: ${e instanceof CheckError ? e.message : e?.stack ?? e}`);
  }
}
if (failed) {
  process.exit(1);
}
console.log(`all ${checks.length} checks passed`);
