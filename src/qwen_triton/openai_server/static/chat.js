// The chat page: one conversation kept in memory and sent whole as `messages` to /v1/chat/completions each
// turn, streamed (SSE); model text is only ever set as text (textContent / Text nodes), never parsed as HTML.
// Stop aborts the fetch, which closes the connection: the server cancels the generation on disconnect.
"use strict";

const $ = (id) => document.getElementById(id);
const ui = {
  messages: $("messages"), prompt: $("prompt"), send: $("send"), stop: $("stop"), error: $("error"),
  model: $("model-name"), system: $("system-prompt"), temperature: $("temperature"), maxTokens: $("max-tokens"),
  composer: $("composer"), newChat: $("new-chat"), template: $("message-template"),
};
// history: the turns sent as `messages` after the system prompt ({role, content}, user/assistant alternating).
const chat = { model: null, history: [], controller: null };

class PageError extends Error {}

function setState(state) {
  document.body.dataset.state = state;  // "loading" | "idle" | "streaming": the test waits on it
  ui.send.disabled = state === "streaming";
  ui.stop.disabled = state !== "streaming";
}

function showError(text) {
  ui.error.textContent = text || "";
  ui.error.hidden = !text;
  if (text) ui.error.scrollIntoView({ block: "nearest" });
}

function nearBottom() {
  const el = document.scrollingElement;
  return el.scrollHeight - el.scrollTop - el.clientHeight < 80;
}

function addMessage(role, text) {
  const node = ui.template.content.firstElementChild.cloneNode(true);
  node.dataset.role = role;
  node.classList.add(role);
  node.querySelector(".role").textContent = role === "user" ? "You" : "Assistant";
  node.querySelector(".content").textContent = text;
  ui.messages.append(node);
  node.scrollIntoView({ block: "end" });
  return node;
}

// An OpenAI error object ({"error": {message, type, param, code}}) as one readable line.
function describeError(error, status) {
  if (!error || !error.message) return `The server answered HTTP ${status} without an error message.`;
  const field = error.param ? ` (field: ${error.param})` : "";
  const kind = [status && `HTTP ${status}`, error.type].filter(Boolean).join(", ");
  return `${error.message}${field}${kind ? ` [${kind}]` : ""}`;
}

async function readError(response) {
  let body = null;
  try { body = await response.json(); } catch (_) { /* not JSON: say what we know */ }
  return describeError(body && body.error, response.status);
}

// Server-sent events: an event ends at a blank line; its `data:` lines carry one JSON chunk or [DONE].
async function* sseData(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.search(/\r?\n\r?\n/)) >= 0) {
      const event = buffer.slice(0, end);
      buffer = buffer.slice(end).replace(/^\r?\n\r?\n/, "");
      const data = event.split(/\r?\n/).filter((l) => l.startsWith("data:")).map((l) => l.slice(5).replace(/^ /, ""));
      if (data.length) yield data.join("\n");
    }
  }
}

function number(input, parse) {
  const value = parse(input.value);
  return Number.isFinite(value) ? value : undefined;  // empty box: the server's default
}

function requestBody(history) {
  const system = ui.system.value.trim();
  const messages = (system ? [{ role: "system", content: system }] : []).concat(history);
  return {
    model: chat.model, messages, stream: true, stream_options: { include_usage: true },
    temperature: number(ui.temperature, parseFloat), max_tokens: number(ui.maxTokens, (v) => parseInt(v, 10)),
  };
}

// Text that arrived is shown at most every FLUSH_MS, not once per chunk: a fast stream would otherwise keep the
// page's thread busy with layout (and scrolling) and leave the Stop button, and the rest of the page, unanswered.
// Written when a chunk arrives FLUSH_MS after the last write (a hidden tab's timers fire late), else by a timer.
const FLUSH_MS = 30;
function throttledWriter(textNode) {
  let pending = "", timer = null, last = -Infinity;
  const flush = () => {
    if (timer !== null) clearTimeout(timer);
    timer = null;
    last = performance.now();
    if (!pending) return;
    const follow = nearBottom();
    textNode.appendData(pending);
    pending = "";
    if (follow) textNode.parentNode.scrollIntoView({ block: "end" });
  };
  const write = (text) => {
    pending += text;
    if (performance.now() - last >= FLUSH_MS) flush();
    else if (timer === null) timer = setTimeout(flush, FLUSH_MS);
  };
  return { write, flush };
}

// Reads the stream into the answer's Text node and `result` (kept up to date, so a stopped answer has its counts).
async function streamAnswer(response, textNode, timing, result) {
  const writer = throttledWriter(textNode);
  try {
    for await (const data of sseData(response)) {
      if (data === "[DONE]") { result.done = true; break; }
      const chunk = JSON.parse(data);
      if (chunk.error) throw new PageError(describeError(chunk.error));
      if (chunk.usage) result.usage = chunk.usage;
      const choice = chunk.choices && chunk.choices[0];
      if (!choice) continue;
      const delta = choice.delta && choice.delta.content;
      if (delta) {
        if (timing.first === null) timing.first = performance.now();
        result.chunks += 1;
        writer.write(delta);
      }
      if (choice.finish_reason) result.finish = choice.finish_reason;
    }
  } finally {
    writer.flush();  // what arrived before the end (or Stop) is on the page before the answer is settled
  }
  if (!result.done) throw new PageError("The stream ended before the server said it was done.");
}

// Time to first token and the decode rate after it; tokens from `usage` when the server sent it (a stopped
// answer gets none), else one per content chunk (an estimate: a chunk can hold several tokens).
function showStats(answer, timing, result) {
  const fromUsage = Boolean(result.usage && result.usage.completion_tokens !== undefined);
  const tokens = fromUsage ? result.usage.completion_tokens : result.chunks;
  const parts = [];
  if (timing.first !== null) {
    const ttftMs = timing.first - timing.start;
    answer.dataset.ttftMs = ttftMs.toFixed(0);
    parts.push(`TTFT ${ttftMs.toFixed(0)} ms`);
    const decodeS = (timing.end - timing.first) / 1000;
    if (tokens > 1 && decodeS > 0) {
      const rate = (tokens - 1) / decodeS;
      answer.dataset.tokensPerS = rate.toFixed(1);
      parts.push(`${rate.toFixed(1)} tok/s`);
    }
  }
  answer.dataset.tokens = String(tokens);
  answer.dataset.tokenSource = fromUsage ? "usage" : "chunks";
  parts.push(`${fromUsage ? "" : "≈"}${tokens} tokens`);
  parts.push(result.finish || "unfinished");
  answer.dataset.finish = result.finish || "unfinished";
  const stats = answer.querySelector(".stats");
  stats.textContent = parts.join(" · ");
  stats.title = "TTFT: request sent to first text. tok/s: tokens after the first over the time after it.";
}

async function send(text) {
  if (!chat.model) await loadModel();
  const history = chat.history;  // New chat swaps in a fresh array: a late answer lands in its own one
  history.push({ role: "user", content: text });
  const question = addMessage("user", text);
  const answer = addMessage("assistant", "");
  const textNode = answer.querySelector(".content").appendChild(document.createTextNode(""));
  const timing = { start: performance.now(), first: null, end: null };
  const result = { finish: null, usage: null, chunks: 0, done: false };
  chat.controller = new AbortController();
  setState("streaming");
  showError("");
  try {
    const response = await fetch("/v1/chat/completions", {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify(requestBody(history)), signal: chat.controller.signal,
    });
    if (!response.ok) throw new PageError(await readError(response));
    await streamAnswer(response, textNode, timing, result);
  } catch (err) {
    const stopped = err.name === "AbortError";
    result.finish = stopped ? "stopped" : "error";
    if (!stopped) showError(err instanceof PageError ? err.message : `Request failed: ${err.message}`);
  } finally {
    timing.end = performance.now();
    showStats(answer, timing, result);
    keepTurn(history, question, textNode.data);
    chat.controller = null;
    setState("idle");
    ui.prompt.focus();
  }
}

// A turn whose answer has text stays in the conversation (a stopped one with what it had); one with no text is
// left out, so the next request still alternates user/assistant.
function keepTurn(history, question, answerText) {
  if (answerText) {
    history.push({ role: "assistant", content: answerText });
  } else {
    history.pop();
    question.dataset.inHistory = "false";
    question.title = "Not sent again: this turn got no answer.";
  }
}

async function loadModel() {
  try {
    const response = await fetch("/v1/models");
    if (!response.ok) throw new PageError(await readError(response));
    const models = (await response.json()).data || [];
    if (!models.length) throw new PageError("The server lists no model.");
    chat.model = models[0].id;
    ui.model.textContent = chat.model;
    ui.model.title = models[0].max_model_len ? `max context ${models[0].max_model_len} tokens` : chat.model;
  } catch (err) {
    showError(`Could not list the models: ${err.message}`);
  }
}

ui.composer.addEventListener("submit", (event) => {
  event.preventDefault();
  const text = ui.prompt.value.trim();
  if (!text || chat.controller) return;
  ui.prompt.value = "";
  send(text);
});

ui.prompt.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    ui.composer.requestSubmit();
  }
});

ui.stop.addEventListener("click", () => {
  if (chat.controller) chat.controller.abort();
});

ui.newChat.addEventListener("click", () => {
  if (chat.controller) chat.controller.abort();
  chat.history = [];
  ui.messages.replaceChildren();
  showError("");
  ui.prompt.focus();
});

// On a phone the settings start folded, so the conversation gets the screen.
if (window.matchMedia("(max-width: 600px)").matches) $("settings").open = false;
loadModel().finally(() => setState("idle"));
