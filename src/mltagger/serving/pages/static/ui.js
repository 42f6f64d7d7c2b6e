// mltagger review pages: keyboard shortcuts and focus after htmx swaps. Every action is also a
// plain button or link; this file only makes them faster to reach.
(function () {
  "use strict";
  function typing(target) {
    return target && target.closest && target.closest("input, textarea, select, [contenteditable]");
  }
  document.addEventListener("keydown", function (event) {
    if (event.ctrlKey || event.metaKey || event.altKey || typing(event.target)) {
      return;
    }
    var key = event.key.toLowerCase();
    var targets = document.querySelectorAll("#card [data-key]");
    for (var i = 0; i < targets.length; i++) {
      if (targets[i].getAttribute("data-key") === key && !targets[i].disabled) {
        event.preventDefault();
        // A card swapped in a moment ago may not be wired up by htmx yet (it does that as the
        // swap settles): wire it now, so a fast key press never falls back to a page reload.
        if (window.htmx) {
          window.htmx.process(document.getElementById("card"));
        }
        targets[i].click();
        return;
      }
    }
  });
  // After the next item arrives, move focus to its title so a screen reader announces it and
  // Tab starts from the new item, not from a button that no longer exists.
  document.addEventListener("htmx:afterSwap", function () {
    var heading = document.querySelector("#card [data-focus]");
    if (heading) {
      heading.focus();
    }
  });
})();
