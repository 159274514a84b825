// Sign-up and sign-in forms. The browser checks the field rules it can (so most mistakes never
// reach the server), and whatever the API answers (409 handle taken, 400 field rules, 429 with
// the wait) is shown as it says it.

import { signIn, signUp } from "./api.js";
import { h } from "./dom.js";

// the API's rules (DESIGN.md, "Limits"); the server checks them too
const HANDLE = { pattern: "[a-z0-9_.]{3,30}", title: "3–30 characters: lowercase letters, digits, _ and ." };
const PASSWORD = { minlength: "8", maxlength: "128" };

export function accountView(mode, { reason = "", done }) {
  const signingUp = mode === "signup";
  const error = h("p", { class: "error", role: "alert", hidden: !reason }, reason);
  const field = (name, label, attributes, hint = "") =>
    h(
      "div",
      { class: "field" },
      h("label", { for: `account-${name}` }, label),
      h("input", { id: `account-${name}`, name, required: true, ...attributes }),
      hint ? h("small", { id: `account-${name}-hint` }, hint) : null,
    );
  const submit = h("button", { type: "submit" }, signingUp ? "Sign up" : "Sign in");
  const form = h(
    "form",
    {
      class: "account",
      "aria-labelledby": "account-title",
      onsubmit: async (event) => {
        event.preventDefault();
        const data = new FormData(form);
        error.hidden = true;
        submit.disabled = true;
        try {
          if (signingUp) await signUp(data.get("handle"), data.get("password"), data.get("display_name"));
          else await signIn(data.get("handle"), data.get("password"));
          done();
        } catch (e) {
          error.textContent = e.description ?? String(e);
          error.hidden = false;
        } finally {
          submit.disabled = false;
        }
      },
    },
    h("h1", { id: "account-title" }, signingUp ? "Create an account" : "Sign in"),
    error,
    field(
      "handle",
      "Handle",
      { autocomplete: "username", autocapitalize: "none", spellcheck: "false", ...(signingUp ? HANDLE : {}), "aria-describedby": signingUp ? "account-handle-hint" : null },
      signingUp ? HANDLE.title : "",
    ),
    signingUp ? field("display_name", "Display name", { autocomplete: "nickname", maxlength: "50", required: false }) : null,
    field(
      "password",
      "Password",
      { type: "password", autocomplete: signingUp ? "new-password" : "current-password", ...(signingUp ? PASSWORD : {}) },
      signingUp ? "8–128 characters" : "",
    ),
    submit,
    h(
      "p",
      {},
      signingUp ? "Have an account? " : "New here? ",
      h("a", { href: signingUp ? "#/signin" : "#/signup" }, signingUp ? "Sign in" : "Create an account"),
    ),
  );
  return { element: h("section", { class: "page" }, form), destroy() {} };
}
