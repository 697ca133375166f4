// Starts Swagger UI on the API's OpenAPI document. A file rather than an inline script, so the
// documentation page runs under the app's Content-Security-Policy (script-src 'self').
(function () {
  var root = document.getElementById("swagger-ui");
  window.ui = SwaggerUIBundle({
    url: root.dataset.openapiUrl,
    dom_id: "#swagger-ui",
    deepLinking: true,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
    // No badge from the public validator: nothing is fetched from another site.
    validatorUrl: null,
  });
})();
