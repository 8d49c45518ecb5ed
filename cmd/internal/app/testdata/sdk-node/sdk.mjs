// The official openai Node SDK, unmodified but for its base URL, against
// edgecache in front of llmsim. TestNodeSDK (../../sdk_test.go) starts both
// and runs this script; it can also be run by hand:
//
//   EDGECACHE_BASE_URL=http://127.0.0.1:8080/v1 node sdk.mjs
//
// Environment:
//   EDGECACHE_BASE_URL      edgecache's OpenAI base URL (required)
//   EDGECACHE_SIM_URL       llmsim's URL, to inject a cut stream (optional:
//                           without it that check is skipped)
//   EDGECACHE_EXPECT_WORDS  words per llmsim answer (optional: checked if set)
//   EDGECACHE_EXPECT_DIMS   llmsim's embedding dimensions (optional)
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
const expectDims = Number(process.env.EDGECACHE_EXPECT_DIMS ?? 0);

// The application's own client: only the base URL points at edgecache.
const client = new OpenAI({ baseURL, apiKey: 'sk-edgecache-sdk-test' });

const CHAT_MODEL = 'gpt-4o-mini';
const EMBED_MODEL = 'text-embedding-3-small';

const run = randomUUID();
const prompt = (what) => `${what} (node sdk run ${run})`;

// llmsim's first word: "sim:" and 12 hex digits of sha256(last user message).
const marker = (text) => 'sim:' + createHash('sha256').update(text).digest('hex').slice(0, 12);

class CheckError extends Error {}
function expect(cond, msg) {
  if (!cond) throw new CheckError(msg);
}

function expectMiss(response, what, { stored }) {
  const cs = response.headers.get('cache-status') ?? '';
  expect(cs.startsWith('edgecache; fwd=uri-miss') && !cs.includes('collapsed'),
    `${what}: cache-status ${JSON.stringify(cs)}, want a miss (edgecache; fwd=uri-miss...)`);
  if (stored) {
    expect(cs.includes('; stored'), `${what}: cache-status ${JSON.stringify(cs)} does not say the answer was stored`);
  }
}

function expectHit(response, what) {
  const cs = response.headers.get('cache-status') ?? '';
  expect(cs.startsWith('edgecache; hit; detail=l1'),
    `${what}: cache-status ${JSON.stringify(cs)}, want a hit (edgecache; hit; detail=l1...)`);
}

function expectAnswer(text, p, what) {
  expect(typeof text === 'string' && text.startsWith(marker(p) + ' '),
    `${what}: answer ${JSON.stringify(text)} does not start with ${JSON.stringify(marker(p) + ' ')}`);
  if (expectWords > 0) {
    const n = text.split(/\s+/).filter(Boolean).length;
    expect(n === expectWords, `${what}: answer ${JSON.stringify(text)} has ${n} words, want ${expectWords}`);
  }
}

function expectUsage(usage, what) {
  expect(usage && usage.completion_tokens > 0 && usage.total_tokens === usage.prompt_tokens + usage.completion_tokens,
    `${what}: usage ${JSON.stringify(usage)}, want completion tokens and a consistent total`);
  if (expectWords > 0) {
    expect(usage.completion_tokens === expectWords,
      `${what}: usage ${JSON.stringify(usage)}, want ${expectWords} completion tokens`);
  }
}

const chatBody = (p) => ({
  model: CHAT_MODEL,
  messages: [
    { role: 'system', content: 'You are terse.' },
    { role: 'user', content: p },
  ],
});

async function chat(p) {
  const { data, response } = await client.chat.completions.create(chatBody(p)).withResponse();
  expect(data.choices?.length === 1, `expected 1 choice, got ${JSON.stringify(data)}`);
  return { data, response, text: data.choices[0].message.content };
}

// chatStream sends a streamed request and assembles the deltas by hand.
async function chatStream(p, { includeUsage = true } = {}) {
  const body = { ...chatBody(p), stream: true };
  if (includeUsage) body.stream_options = { include_usage: true };
  const { data: stream, response } = await client.chat.completions.create(body).withResponse();
  const out = { response, text: '', chunks: 0, finish: null, usage: null, id: null, model: null, error: null };
  try {
    for await (const chunk of stream) {
      out.chunks++;
      out.id ??= chunk.id;
      out.model ??= chunk.model;
      for (const c of chunk.choices ?? []) {
        expect(c.index === 0, `unexpected choice index ${c.index}`);
        out.text += c.delta?.content ?? '';
        if (c.finish_reason) out.finish = c.finish_reason;
      }
      if (chunk.usage) out.usage = chunk.usage;
    }
  } catch (err) {
    if (err instanceof CheckError) throw err;
    out.error = err;
  }
  return out;
}

// A relayed stream (a miss) arrives word by word, as the model sent it; a
// replayed one (a hit) may carry the stored text in fewer chunks.
function expectCompleteStream(s, p, what, { usage, relayed }) {
  expect(s.error === null, `${what}: the stream failed: ${s.error}`);
  const ct = s.response.headers.get('content-type') ?? '';
  expect(ct.startsWith('text/event-stream'), `${what}: content-type ${JSON.stringify(ct)}, want text/event-stream`);
  if (relayed && expectWords > 0) {
    expect(s.chunks > expectWords, `${what}: ${s.chunks} chunks for ${expectWords} words: not relayed word by word`);
  }
  expect(s.chunks >= 2, `${what}: ${s.chunks} chunks, want content and a finish chunk at least`);
  expectAnswer(s.text, p, what);
  expect(s.finish === 'stop', `${what}: finish_reason ${JSON.stringify(s.finish)}, want "stop"`);
  expect(s.model === CHAT_MODEL, `${what}: model ${JSON.stringify(s.model)}, want ${CHAT_MODEL}`);
  if (usage) {
    expectUsage(s.usage, what);
  } else {
    expect(s.usage === null, `${what}: usage ${JSON.stringify(s.usage)} in a stream that did not ask for it`);
  }
}

const checks = [];
const check = (name, fn) => checks.push({ name, fn });

// Shared between checks that run in order.
const nonStreamPrompt = prompt('Name a colour');
let nonStreamMiss;

check('chat non-streamed: miss then identical hit', async () => {
  const miss = await chat(nonStreamPrompt);
  expectMiss(miss.response, 'miss', { stored: true });
  expectAnswer(miss.text, nonStreamPrompt, 'miss');
  expectUsage(miss.data.usage, 'miss');
  const hit = await chat(nonStreamPrompt);
  expectHit(hit.response, 'hit');
  expect(hit.text === miss.text, `hit ${JSON.stringify(hit.text)} != miss ${JSON.stringify(miss.text)}`);
  expect(hit.data.id === miss.data.id && hit.data.model === miss.data.model,
    `hit (id ${hit.data.id}, model ${hit.data.model}) != miss (id ${miss.data.id}, model ${miss.data.model})`);
  expect(JSON.stringify(hit.data.usage) === JSON.stringify(miss.data.usage),
    `hit usage ${JSON.stringify(hit.data.usage)} != miss usage ${JSON.stringify(miss.data.usage)}`);
  nonStreamMiss = miss;
});

check('chat streamed after non-streamed: hit replayed as a stream', async () => {
  expect(nonStreamMiss, 'the non-streamed check did not pass');
  for (const includeUsage of [true, false]) {
    const what = `streamed hit (include_usage ${includeUsage})`;
    const s = await chatStream(nonStreamPrompt, { includeUsage });
    expectHit(s.response, what);
    expectCompleteStream(s, nonStreamPrompt, what, { usage: includeUsage, relayed: false });
    expect(s.text === nonStreamMiss.text, `${what}: assembled ${JSON.stringify(s.text)} != ${JSON.stringify(nonStreamMiss.text)}`);
    expect(s.id === nonStreamMiss.data.id, `${what}: id ${s.id} != ${nonStreamMiss.data.id}`);
    if (includeUsage) {
      expect(s.usage.total_tokens === nonStreamMiss.data.usage.total_tokens,
        `${what}: usage ${JSON.stringify(s.usage)} != ${JSON.stringify(nonStreamMiss.data.usage)}`);
    }
  }
});

check('chat streamed: miss, then identical non-streamed and streamed hits', async () => {
  const p = prompt('Name a tree');
  const miss = await chatStream(p);
  expectMiss(miss.response, 'streamed miss', { stored: false });
  expectCompleteStream(miss, p, 'streamed miss', { usage: true, relayed: true });
  const hit = await chat(p);
  expectHit(hit.response, 'non-streamed hit');
  expect(hit.text === miss.text, `non-streamed hit ${JSON.stringify(hit.text)} != streamed miss ${JSON.stringify(miss.text)}`);
  expect(hit.data.id === miss.id, `non-streamed hit id ${hit.data.id} != streamed miss id ${miss.id}`);
  const again = await chatStream(p);
  expectHit(again.response, 'streamed hit');
  expectCompleteStream(again, p, 'streamed hit', { usage: true, relayed: false });
  expect(again.text === miss.text, `streamed hit ${JSON.stringify(again.text)} != streamed miss ${JSON.stringify(miss.text)}`);
  expect(JSON.stringify(again.usage) === JSON.stringify(miss.usage),
    `streamed hit usage ${JSON.stringify(again.usage)} != streamed miss usage ${JSON.stringify(miss.usage)}`);
});

check('embeddings (SDK default base64): miss then the same vectors on the hit', async () => {
  const inputs = [prompt('first text'), prompt('second text')];
  const get = async (what, extra = {}) => {
    const { data, response } = await client.embeddings.create({ model: EMBED_MODEL, input: inputs, ...extra }).withResponse();
    expect(data.data?.length === inputs.length, `${what}: ${data.data?.length} embeddings, want ${inputs.length}`);
    data.data.forEach((d, i) => {
      expect(d.index === i, `${what}: embedding ${i} has index ${d.index}`);
      expect(d.embedding.length > 0, `${what}: embedding ${i} is empty`);
      if (expectDims > 0) {
        expect(d.embedding.length === expectDims, `${what}: embedding ${i} has ${d.embedding.length} dimensions, want ${expectDims}`);
      }
      let norm = 0;
      for (const x of d.embedding) norm += x * x;
      expect(Math.abs(Math.sqrt(norm) - 1) < 1e-4, `${what}: embedding ${i} is not a unit vector (norm ${Math.sqrt(norm)})`);
    });
    return { data, response };
  };
  const miss = await get('miss');
  expectMiss(miss.response, 'miss', { stored: true });
  const hit = await get('hit');
  expectHit(hit.response, 'hit');
  miss.data.data.forEach((m, i) => {
    const h = hit.data.data[i].embedding;
    expect(h.length === m.embedding.length && m.embedding.every((x, j) => x === h[j]),
      `embedding ${i} differs between miss and hit`);
  });
  // The same texts as floats (another cache entry): the base64 vectors the
  // SDK decoded are the float32s the model sent.
  const asFloat = await get('float', { encoding_format: 'float' });
  expectMiss(asFloat.response, 'float', { stored: true });
  asFloat.data.data.forEach((f, i) => {
    const b = hit.data.data[i].embedding;
    expect(f.embedding.every((x, j) => Math.fround(x) === b[j]),
      `embedding ${i}: the decoded base64 vector differs from the float one`);
  });
});

if (simURL) {
  check('chat stream cut by the model: an SDK error, and not stored', async () => {
    const p = prompt('Name a river');
    const set = await fetch(`${simURL}/_sim/faults`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ cut_after: 3 }),
    });
    expect(set.ok, `setting the llmsim fault: HTTP ${set.status}`);
    let cut;
    try {
      cut = await chatStream(p);
    } finally {
      const del = await fetch(`${simURL}/_sim/faults`, { method: 'DELETE' });
      expect(del.ok, `clearing the llmsim fault: HTTP ${del.status}`);
    }
    expect(cut.error !== null, `the cut stream ended without an error; assembled ${JSON.stringify(cut.text)}`);
    expect(cut.finish === null, `the cut stream has finish_reason ${JSON.stringify(cut.finish)}`);
    const again = await chatStream(p);
    expectMiss(again.response, 'after the cut', { stored: false });
    expectCompleteStream(again, p, 'after the cut', { usage: true, relayed: true });
    expect(again.text.startsWith(cut.text),
      `the cut text ${JSON.stringify(cut.text)} is not a prefix of the full answer ${JSON.stringify(again.text)}`);
    console.log(`   (cut stream error: ${cut.error?.message ?? cut.error})`);
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
