// A video's comments in a dialog: the list, newest first, page by page, and (signed in) a form
// to post one; authors and the video's creator may delete.

import { call, id, session } from "./api.js";
import { announce, count, h } from "./dom.js";
import * as viewer from "./viewer.js";

const PAGE_SIZE = 20;
const COMMENT_MAX = 500; // the API's limit (DESIGN.md); the server checks it too

export function openComments(video, button) {
  const list = h("ol", { class: "comment-list", "aria-live": "polite" });
  const more = h("button", { class: "more", hidden: true }, "More comments");
  const error = h("p", { class: "error", role: "alert", hidden: true });
  let token = "";

  const row = (comment) => {
    const author = h("a", { href: `#/u/${id(comment.author_id)}`, class: "author" }, "@…");
    viewer.user(comment.author_id).then(
      (u) => (author.textContent = `@${u.handle}`),
      () => (author.textContent = "@unknown"),
    );
    const me = session.user?.user_id;
    const remove =
      me && (me === comment.author_id || me === video.creator_id)
        ? h("button", { class: "delete", "aria-label": "Delete comment", onclick: () => removeComment(comment, li) }, "✕")
        : null;
    const li = h("li", { dataset: { commentId: comment.comment_id } }, author, " ", h("span", {}, comment.text), remove);
    return li;
  };

  const removeComment = async (comment, li) => {
    try {
      await call("DELETE", `/v1/videos/${id(video.video_id)}/comments/${id(comment.comment_id)}`);
      li.remove();
      setCount(-1);
    } catch (e) {
      announce(e.description ?? String(e), "error");
    }
  };

  const setCount = (step) => {
    const n = Math.max(0, Number(button.dataset.count ?? video.comment_count ?? 0) + step);
    button.dataset.count = String(n);
    button.querySelector(".n").textContent = count(n);
  };

  const page = async () => {
    more.hidden = true;
    try {
      const reply = await call("GET", `/v1/videos/${id(video.video_id)}/comments`, {
        query: { page_size: PAGE_SIZE, page_token: token },
      });
      for (const c of reply.comments ?? []) list.append(row(c));
      token = reply.next_page_token || "";
      more.hidden = !token;
      if (!list.children.length) list.append(h("li", { class: "none" }, "No comments yet."));
    } catch (e) {
      error.textContent = e.description ?? String(e);
      error.hidden = false;
    }
  };
  more.addEventListener("click", page);

  let form = h("p", {}, h("a", { href: "#/signin" }, "Sign in"), " to comment.");
  const post = h("button", { type: "submit" }, "Post");
  if (session.signedIn) {
    const text = h("textarea", { id: "comment-text", name: "text", maxlength: COMMENT_MAX, rows: "2", required: true });
    form = h(
      "form",
      {
        class: "comment-form",
        onsubmit: async (event) => {
          event.preventDefault();
          if (post.disabled) return;
          error.hidden = true;
          post.disabled = true; // a double Enter must not post twice
          try {
            const comment = await call("POST", `/v1/videos/${id(video.video_id)}/comments`, {
              body: { text: text.value },
            });
            list.querySelector(".none")?.remove();
            list.prepend(row(comment));
            text.value = "";
            setCount(1);
          } catch (e) {
            error.textContent = e.description ?? String(e);
            error.hidden = false;
          } finally {
            post.disabled = false;
          }
        },
      },
      h("label", { for: "comment-text" }, "Add a comment"),
      text,
      post,
    );
  }

  const dialog = h(
    "dialog",
    { class: "comments-dialog", "aria-label": "Comments" },
    h("header", {}, h("h2", {}, "Comments"), h("button", { class: "close", "aria-label": "Close", onclick: () => dialog.close() }, "✕")),
    list,
    more,
    error,
    form,
  );
  // a link inside (an author, "Sign in") leaves the screen: the dialog goes with it
  const leave = () => dialog.close();
  window.addEventListener("hashchange", leave);
  dialog.addEventListener("close", () => {
    window.removeEventListener("hashchange", leave);
    dialog.remove();
    if (button.isConnected) button.focus();
  });
  document.body.append(dialog);
  dialog.showModal();
  page();
}
