// The JSON API: requests with the session cookie and the CSRF token, errors as exceptions
// carrying the documented error's message and HTTP status.
import { pageData } from "./page.js";

function csrfToken() {
  const match = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
  return match ? decodeURIComponent(match[1]) : "";
}

// `code`: the error's code ("answer_in_progress", …; "network" when no answer came).
export class ApiError extends Error {
  constructor(message, status, code) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export async function requestJson(method, url, body) {
  let response;
  try {
    response = await fetch(url, {
      method: method,
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRFToken": csrfToken() },
      body: method === "GET" ? undefined : JSON.stringify(body || {}),
    });
  } catch {
    throw new ApiError("", 0, "network"); // no answer at all: the caller words it
  }
  const data = response.status === 204 ? {} : await response.json().catch(() => ({}));
  if (!response.ok) {
    const error = data.error || {};
    throw new ApiError(error.message || response.statusText, response.status, error.code);
  }
  return data;
}

export function postJson(url, body) {
  return requestJson("POST", url, body);
}

export function getJson(url) {
  return requestJson("GET", url);
}

// A file as the multipart field "file" (XMLHttpRequest: fetch cannot tell how much of a
// request body is sent). `progress(share)` gets the share sent, from 0 to 1.
export function uploadFile(url, file, progress) {
  return new Promise((resolve, reject) => {
    const request = new XMLHttpRequest();
    request.open("POST", url);
    request.withCredentials = true;
    request.setRequestHeader("X-CSRFToken", csrfToken());
    request.responseType = "json";
    request.upload.addEventListener("progress", (event) => {
      if (event.lengthComputable) progress(event.loaded / event.total);
    });
    request.addEventListener("load", () => {
      const data = request.response || {};
      if (request.status >= 200 && request.status < 300) {
        resolve(data);
        return;
      }
      const error = data.error || {};
      reject(new ApiError(error.message || request.statusText, request.status, error.code));
    });
    // No answer at all (the connection broke, or the server closed it on a body too
    // large before reading it): the caller words it.
    ["error", "abort", "timeout"].forEach((name) =>
      request.addEventListener(name, () => reject(new ApiError("", 0, "network")))
    );
    const body = new FormData();
    body.append("file", file, file.name);
    progress(0);
    request.send(body);
  });
}

// The URL of a per-message action ("cancel", "retry", …) for message `id`.
export function messageUrl(action, id) {
  return pageData.message_urls[action].replace("{id}", encodeURIComponent(String(id)));
}
