/* The landing page: puts this server's address into the examples. */
(function () {
  'use strict';
  var origin = document.getElementById('origin');
  if (origin) origin.textContent = location.origin;
})();
