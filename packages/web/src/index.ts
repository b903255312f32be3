/**
 * `@dflmoe/web`: a site in a browser tab. The browser app itself is built
 * into `dist/app` (see docs/browser.md); from Node this package serves it
 * (`serveWebApp`, what `dflmoe web` runs).
 *
 * @packageDocumentation
 */
export { WEB_APP_DIR, serveWebApp, type WebAppServer } from './server.js';
