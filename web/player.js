// One `<video>` and what feeds it: the HLS ladder through hls.js (Media Source Extensions)
// where the video has one and the browser can, the browser's own HLS where it has that (Safari),
// the original file otherwise. A source is attached when the item comes near the screen
// (preloading a few seconds), played when it is on screen, and released when it is far away,
// so a long scroll holds a handful of players, not hundreds.

const PRELOAD_SECONDS = 4; // buffered ahead for the items after the one in view

export class Player {
  constructor(video, item) {
    this.video = video;
    this.item = item; // the Video resource
    this.hls = null;
    this.source = ""; // "hls" | "native-hls" | "original" once attached
    this.wanted = false; // playing is wanted (the item is in view and not paused by the person)
  }

  attach() {
    if (this.source) return;
    const { video, item } = this;
    const Hls = window.Hls;
    if (item.hls_url && Hls?.isSupported()) {
      this.hls = new Hls({ maxBufferLength: PRELOAD_SECONDS, capLevelToPlayerSize: true, startLevel: -1 });
      this.hls.on(Hls.Events.ERROR, (_, data) => {
        if (!data.fatal) return;
        console.warn(`HLS failed (${data.details}); playing the original`);
        // the ladder failed here: the original still plays
        this.release();
        this.attachOriginal();
        if (this.wanted) this.play();
      });
      this.hls.loadSource(item.hls_url);
      this.hls.attachMedia(video);
      this.source = "hls";
    } else if (item.hls_url && video.canPlayType("application/vnd.apple.mpegurl")) {
      video.src = item.hls_url;
      this.source = "native-hls";
    } else {
      this.attachOriginal();
    }
    video.dataset.source = this.source;
  }

  attachOriginal() {
    // the whole file may be large: the first frames for a preloaded item, all once in view
    this.video.preload = this.wanted ? "auto" : "metadata";
    this.video.src = this.item.playback_url;
    this.source = "original";
    this.video.dataset.source = this.source;
  }

  play() {
    this.wanted = true;
    this.attach();
    this.video.preload = "auto";
    if (this.hls) this.hls.config.maxBufferLength = 30; // the one in view buffers further
    const attempt = () => {
      this.video.play().catch((error) => {
        if (!this.wanted) return; // paused (scrolled away) before it started
        if (error.name === "AbortError") {
          // a source was attached under it (hls.js sets its own): try again once it can play
          this.video.addEventListener("canplay", attempt, { once: true });
        } else {
          // autoplay refused (sound on without a gesture): show the play state, wait for a tap
          this.video.closest("[data-video-id]")?.classList.add("paused");
        }
      });
    };
    attempt();
  }

  pause() {
    this.wanted = false;
    this.video.pause();
  }

  release() {
    if (!this.source) return;
    if (this.hls) this.hls.destroy();
    this.hls = null;
    this.source = "";
    this.video.removeAttribute("src");
    delete this.video.dataset.source;
    this.video.load();
  }
}
