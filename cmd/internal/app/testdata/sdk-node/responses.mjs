// The official openai Node SDK's client.responses.create, unmodified but
// for its base URL, against edgecache in front of llmsim. TestNodeSDKResponses
// (../../sdk_responses_test.go) starts both and runs this script; by hand:
//
//   EDGECACHE_BASE_URL=http://127.0.0.1:8080/v1 node responses.mjs
//
// Environment:
//   EDGECACHE_BASE_URL      edgecache's OpenAI base URL (required)
//   EDGECACHE_SIM_URL       llmsim's URL, for the 503 storm (optional:
//                           without it that check is skipped)
//   EDGECACHE_EXPECT_WORDS  words per llmsim answer (optional: checked if set)
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
const simURL = process.env.EDGECACHE_SIM_URL ?? '';
const expectWords = Number(process.env.EDGECACHE_EXPECT_WORDS ?? 0);

const client = new OpenAI({ baseURL, apiKey: 'sk-edgecache-sdk-test' });
const MODEL = 'gpt-4o-mini';
const run = randomUUID();
const prompt = (what) => `${what} (node responses run ${run})`;
const marker = (text) => 'sim:' + createHash('sha256').update(text).digest('hex').slice(0, 12);

class CheckError extends Error {}
function expect(cond, msg) {
  if (!cond) throw new CheckError(msg);
}
function cacheStatus(response) {
  return response.headers.get('cache-status') ?? '';
}
function expectMiss(response, what) {
  const cs = cacheStatus(response);
  expect(cs.startsWith('edgecache; fwd=uri-miss') && !cs.includes('collapsed'),
    `${what}: cache-status ${JSON.stringify(cs)}, want a miss`);
}
function expectHit(response, what) {
  const cs = cacheStatus(response);
  expect(cs.startsWith('edgecache; hit; detail=l1'), `${what}: cache-status ${JSON.stringify(cs)}, want a hit`);
}
function expectAnswer(text, p, what) {
  expect(text.startsWith(marker(p) + ' '), `${what}: answer ${JSON.stringify(text)} does not start with ${marker(p)}`);
  if (expectWords) {
    expect(text.split(/\s+/).length === expectWords, `${what}: answer ${JSON.stringify(text)} is not ${expectWords} words`);
  }
}

const body = (p, extra = {}) => ({ model: MODEL, instructions: 'Answer briefly.', input: p, ...extra });

async function create(b, stream) {
  if (!stream) {
    const { data, response } = await client.responses.create(b).withResponse();
    expect(data.status === 'completed', `status ${data.status}`);
    return { text: data.output_text, response };
  }
  const { data: events, response } = await client.responses.create({ ...b, stream: true }).withResponse();
  const want = ['response.created', 'response.in_progress', 'response.output_item.added', 'response.content_part.added',
    'response.output_text.delta', 'response.output_text.done', 'response.content_part.done', 'response.output_item.done',
    'response.completed'];
  let at = 0;
  let deltas = '';
  let final = null;
  for await (const ev of events) {
    if (at < want.length && ev.type === want[at]) at++;
    if (ev.type === 'response.output_text.delta') deltas += ev.delta;
    if (ev.type === 'response.completed') final = ev.response;
  }
  expect(at === want.length, `stream lacks ${want[at]} (in order)`);
  const text = final.output.flatMap((o) => o.content ?? []).filter((c) => c.type === 'output_text').map((c) => c.text).join('');
  expect(deltas === text, `deltas ${JSON.stringify(deltas)} differ from the completed text ${JSON.stringify(text)}`);
  return { text, response };
}

const checks = [];
const check = (name, fn) => checks.push({ name, fn });

for (const [missSSE, hitSSE] of [[false, false], [false, true], [true, false], [true, true]]) {
  const name = `${missSSE ? 'stream' : 'json'} miss, ${hitSSE ? 'stream' : 'json'} hit`;
  check(`responses ${name}: identical text`, async () => {
    const p = prompt(name);
    const miss = await create(body(p), missSSE);
    expectMiss(miss.response, 'miss');
    expectAnswer(miss.text, p, 'miss');
    const hit = await create(body(p), hitSSE);
    expectHit(hit.response, 'hit');
    expect(hit.text === miss.text, `hit ${JSON.stringify(hit.text)} != miss ${JSON.stringify(miss.text)}`);
    for (const [what, b] of [['another prompt', body(p + '!')], ['other instructions', body(p, { instructions: 'Answer at length.' })],
      ['another model', body(p, { model: 'gpt-4.1-mini' })]]) {
      expectMiss((await create(b, hitSSE)).response, what);
    }
  });
}

check('responses bad input: a 400 in the OpenAI error shape', async () => {
  try {
    await client.responses.create({ model: MODEL });
  } catch (err) {
    expect(err instanceof OpenAI.BadRequestError, `got ${err}`);
    expect(err.error?.type === 'invalid_request_error', `error ${JSON.stringify(err.error)}`);
    return;
  }
  throw new CheckError('no error');
});

if (simURL) {
  check('responses 503 storm: a 503 with Retry-After, streamed or not', async () => {
    const set = await fetch(`${simURL}/_sim/faults`, { method: 'POST', headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ status: 503, retry_after: 7, paths: ['/v1/responses'] }) });
    expect(set.ok, `setting the fault: ${set.status}`);
    try {
      for (const stream of [false, true]) {
        try {
          const r = await client.responses.create({ ...body(prompt(`storm ${stream}`)), stream });
          if (stream) for await (const _ of r);
        } catch (err) {
          expect(err instanceof OpenAI.APIError && err.status === 503, `stream=${stream}: got ${err}`);
          const ra = err.headers?.get?.('retry-after') ?? err.headers?.['retry-after'];
          expect(ra && ra !== '0', `stream=${stream}: retry-after ${ra}`);
          continue;
        }
        throw new CheckError(`stream=${stream}: no error`);
      }
    } finally {
      await fetch(`${simURL}/_sim/faults`, { method: 'DELETE' });
    }
  });
}

let failed = 0;
for (const { name, fn } of checks) {
  try {
    await fn();
    console.log(`ok ${name}`);
  } catch (err) {
    failed++;
    console.log(`FAIL ${name}: ${err instanceof CheckError ? err.message : err?.stack ?? err}`);
  }
}
console.log(failed > 0 ? `${failed} of ${checks.length} checks failed` : `all ${checks.length} checks passed`);
process.exit(failed > 0 ? 1 : 0);
