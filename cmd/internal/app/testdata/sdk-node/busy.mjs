// The official openai Node SDK, unmodified but for its base URL and with its
// default retries, asks edgecache while the upstream answers 503 with
// Retry-After: 7. TestNoNeedlessWaitingSDKs (../../guard_test.go) sets up the
// outage, runs this script and checks what it prints: how long each call
// took, and what the application got (an answer, or the error's status and
// Retry-After).
//
// Environment:
//   EDGECACHE_BASE_URL  edgecache's OpenAI base URL (required)
//   EDGECACHE_PROMPTS   a JSON object, name → question (required)
//
// Prints one JSON object, name → {ms, status, retry_after, text} for the
// non-streamed call and name+"/stream" for the streamed one; exits 1 on an
// error that is not an API error.

import OpenAI from 'openai';

const baseURL = process.env.EDGECACHE_BASE_URL;
const prompts = JSON.parse(process.env.EDGECACHE_PROMPTS ?? 'null');
if (!baseURL || !prompts) {
  console.error('EDGECACHE_BASE_URL and EDGECACHE_PROMPTS must be set');
  process.exit(2);
}
// The application's own client: default retries (2), default timeout.
const client = new OpenAI({ baseURL, apiKey: 'sk-edgecache-sdk-test' });
const body = (q) => ({
  model: 'sim-1',
  messages: [{ role: 'user', content: q }],
});

async function ask(q, stream) {
  const t0 = performance.now();
  try {
    let text = '';
    if (stream) {
      for await (const chunk of await client.chat.completions.create({ ...body(q), stream: true })) {
        for (const c of chunk.choices ?? []) text += c.delta?.content ?? '';
      }
    } else {
      const completion = await client.chat.completions.create(body(q));
      text = completion.choices?.[0]?.message?.content ?? '';
    }
    return { ms: performance.now() - t0, status: 200, text };
  } catch (err) {
    if (!(err instanceof OpenAI.APIError)) throw err;
    return { ms: performance.now() - t0, status: err.status, retry_after: err.headers?.get('retry-after') ?? '' };
  }
}

const out = {};
try {
  for (const [name, q] of Object.entries(prompts)) {
    out[name] = await ask(q, false);
    out[name + '/stream'] = await ask(q, true);
  }
} catch (err) {
  console.error(err?.stack ?? err);
  process.exit(1);
}
console.log(JSON.stringify(out));
