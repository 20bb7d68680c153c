// The Soul Serve API as the studio uses it: JSON calls with the bearer key, errors in words,
// and a job's Server-Sent Events read with fetch (EventSource cannot send the key as a header,
// and the key never goes into a URL).

export class ApiError extends Error {
  constructor(status, detail, fields = {}, errors = []) {
    super(detail);
    this.status = status;
    this.fields = fields; // field name -> message, from the answer's "errors"
    this.errors = errors; // the answer's "errors" as they came (a compile's names and lines)
  }
}

let apiKey = () => "";

export function useKey(read) {
  apiKey = read;
}

function headers(extra = {}) {
  const key = apiKey().trim();
  return key ? { ...extra, Authorization: `Bearer ${key}` } : extra;
}

const WHAT = {
  401: "The service wants an API key: type it at the top right.",
  429: "Too many jobs for now.",
  503: "The service is busy.",
};

async function failure(response) {
  let body = {};
  try {
    body = await response.json();
  } catch {
    // not JSON: a proxy or a crash answered
  }
  const fields = {};
  for (const error of body.errors || []) {
    const loc = (error.loc || []).filter((p) => p !== "body" && typeof p === "string");
    const field = loc.find((p) => !["image", "selfie", "pack"].includes(p)) || loc[0] || "";
    if (field) fields[field] = error.msg;
  }
  const detail = body.detail || `${response.status} ${response.statusText}`;
  const named = /^(\w+)[.:]/.exec(detail); // the service's own checks name the field first
  if (!Object.keys(fields).length && named) fields[named[1]] = detail;
  const hint = WHAT[response.status] ? `${WHAT[response.status]} ` : "";
  const retry = response.headers.get("Retry-After");
  const when = retry ? ` Try again in ${retry} s.` : "";
  return new ApiError(response.status, `${hint}${detail}${when}`, fields, body.errors || []);
}

export async function call(method, path, body) {
  let response;
  try {
    response = await fetch(path, {
      method,
      headers: headers(body === undefined ? {} : { "Content-Type": "application/json" }),
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (error) {
    throw new ApiError(0, `The service cannot be reached (${error.message}).`);
  }
  if (!response.ok) throw await failure(response);
  return response.status === 204 ? null : response.json();
}

// Calls onEvent(name, data) for each event of the stream until it ends; resolves then.
export async function events(path, onEvent, signal) {
  const response = await fetch(path, { headers: headers({ Accept: "text/event-stream" }), signal });
  if (!response.ok) throw await failure(response);
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const frame = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let name = "message";
      const data = [];
      for (const line of frame.split("\n")) {
        if (line.startsWith("event: ")) name = line.slice(7);
        else if (line.startsWith("data: ")) data.push(line.slice(6));
      }
      if (data.length) onEvent(name, JSON.parse(data.join("\n")));
    }
  }
}

const ENDED = ["succeeded", "partial", "failed", "cancelled"];
const RETRY_MS = [250, 500, 1000, 2000, 4000];

const pause = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// A stream that drops is not a job that ends: Serve cuts streams at request_timeout_s and a
// replica restart cuts them too, while the job goes on. Only what the service says ends a job.
function dropped(error) {
  return !(error instanceof ApiError) || error.status === 0 || error.status >= 500;
}

// Sends image files as multipart/form-data (field "files"): the same errors as call().
export async function upload(path, files) {
  const form = new FormData();
  for (const file of files) form.append("files", file, file.name);
  let response;
  try {
    response = await fetch(path, { method: "POST", headers: headers(), body: form });
  } catch (error) {
    throw new ApiError(0, `The service cannot be reached (${error.message}).`);
  }
  if (!response.ok) throw await failure(response);
  return response.json();
}

// The job's state from GET /jobs/{id}, asked again while the service cannot be reached.
async function jobState(path) {
  for (let attempt = 0; ; attempt += 1) {
    try {
      return await call("GET", path);
    } catch (error) {
      if (!dropped(error)) throw error;
      await pause(RETRY_MS[Math.min(attempt, RETRY_MS.length - 1)]);
    }
  }
}

// Follows a job to its end over its events, resuming a dropped stream from the job's state:
// resolves with the finished job document. onProgress(progress), onItem(index, item) as it
// goes, onItem again for pack items delivered while the stream was down; onResume() when a
// dropped stream is picked up again.
export async function followJob(links, { onProgress = () => {}, onItem = () => {}, onResume = () => {} } = {}) {
  const seen = new Set();
  const item = (index, value) => {
    if (!seen.has(index)) onItem(index, value);
    seen.add(index);
  };
  const state = (job) => {
    onProgress(job.progress);
    (job.result?.items || []).forEach((value, index) => value && item(index, value));
  };
  for (let drops = 0; ; drops += 1) {
    let last = null;
    try {
      await events(links.events, (name, data) => {
        if (name === "progress") onProgress(data);
        else if (name === "item") item(data.index, data.item);
        else if (name === "status" || name === "done") {
          last = data;
          state(data);
        }
      });
    } catch (error) {
      if (!dropped(error)) throw error;
    }
    if (last && ENDED.includes(last.status)) return last;
    onResume();
    await pause(RETRY_MS[Math.min(drops, RETRY_MS.length - 1)]);
    const job = await jobState(links.self);
    if (ENDED.includes(job.status)) return job;
    state(job);
  }
}

// Submits a job and follows it to its end: the finished job document.
export async function runJob(spec, callbacks = {}) {
  const accepted = await call("POST", "/jobs", spec);
  return followJob(accepted.links, callbacks);
}
