// Starts Swagger UI on /docs. A file, not an inline script: the page's Content-Security-Policy
// allows scripts from this server only.
const root = document.getElementById("swagger-ui");
window.ui = SwaggerUIBundle({
  url: root.dataset.openapiUrl,
  domNode: root,
  presets: [SwaggerUIBundle.presets.apis, SwaggerUIBundle.SwaggerUIStandalonePreset],
  layout: "BaseLayout",
  deepLinking: true,
  // The default sends the document to an outside validator and shows its badge.
  validatorUrl: null,
});
