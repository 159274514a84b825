// The web client: a single page on the public REST API, routed by the URL's hash so the edge
// serves one document for every screen.
//   #/            for-you feed (anonymous or signed in)      #/following   following feed
//   #/u/<id>[/tab] a profile (videos, likes, favorites, followers, following)
//   #/v/<id>      one video                                   #/upload      upload
//   #/signin, #/signup

import { session, signOut } from "./api.js";
import { accountView } from "./account.js";
import { announce, h } from "./dom.js";
import { feedView, videoView } from "./feed.js";
import { profileView } from "./profile.js";
import { uploadView } from "./upload.js";
import * as viewer from "./viewer.js";

const main = document.getElementById("view");
const nav = document.getElementById("nav");
let view = null;
let signedOutReason = "";

const SIGNED_IN_ONLY = new Set(["following", "upload"]);

function parts() {
  try {
    return location.hash.replace(/^#\/?/, "").split("/").map(decodeURIComponent);
  } catch {
    return []; // a mangled link: the feed
  }
}

function route() {
  if (view && location.hash && !location.hash.startsWith("#/")) {
    // an in-page anchor (the skip link): not a screen
    document.getElementById(location.hash.slice(1))?.focus();
    return;
  }
  const [name = "", arg = "", tab = ""] = parts();
  if (SIGNED_IN_ONLY.has(name) && !session.signedIn) {
    location.replace("#/signin");
    return;
  }
  view?.destroy(); // (its plays are reported as it goes)
  const afterSignIn = () => {
    viewer.forget();
    home();
  };
  const views = {
    "": () => feedView("for_you"),
    following: () => feedView("following"),
    u: () => profileView(arg, tab),
    v: () => videoView(arg),
    upload: () => uploadView(),
    signin: () => accountView("signin", { reason: signedOutReason, done: afterSignIn }),
    signup: () => accountView("signup", { done: afterSignIn }),
  };
  view = (views[name] ?? views[""])();
  signedOutReason = "";
  main.replaceChildren(view.element);
  if (document.activeElement === document.body || !document.activeElement?.isConnected) main.focus();
  paintNav(name === "u" && arg === session.user?.user_id ? "me" : name);
}

function paintNav(current) {
  const link = (href, label, name, className = null) =>
    h("a", { href, class: className, "aria-current": current === name ? "page" : null }, label);
  const me = session.user;
  const links = [
    link("#/", "For you", ""),
    me ? link("#/following", "Following", "following") : null,
    me ? link("#/upload", "Upload", "upload") : null,
    me ? link(`#/u/${encodeURIComponent(me.user_id)}`, `@${me.handle}`, "me", "me") : null,
    me
      ? h("button", { class: "signout", onclick: () => signOut().finally(home) }, "Sign out")
      : link("#/signin", "Sign in", "signin"),
  ];
  nav.replaceChildren(...links.filter(Boolean));
}

function home() {
  if (location.hash.replace(/^#\/?/, "")) location.hash = "#/";
  else route();
}

session.onSignedOut((reason) => {
  viewer.forget();
  signedOutReason = reason;
  if (reason) {
    announce(reason, "error");
    location.hash = "#/signin";
  }
  paintNav("");
});

window.addEventListener("hashchange", route);
route();
