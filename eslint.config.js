// ESLint for the page's own scripts (make lint); vendored libraries are not ours to lint.
import js from "@eslint/js";
import globals from "globals";

export default [
  {
    ignores: [
      "static/vendor/**",
      "staticfiles/**",
      "test-artifacts/**",
      ".venv/**",
      "node_modules/**",
      "tests/clients/node_modules/**",
    ],
  },
  js.configs.recommended,
  {
    files: ["static/assistant/chat/**/*.js"],
    languageOptions: { ecmaVersion: 2022, sourceType: "module", globals: globals.browser },
  },
  {
    files: ["static/assistant/*.js"],
    languageOptions: {
      ecmaVersion: 2022,
      sourceType: "script",
      globals: { ...globals.browser, markdownit: "readonly", DOMPurify: "readonly", hljs: "readonly" },
    },
  },
  {
    files: ["eslint.config.js"],
    languageOptions: { sourceType: "module", globals: globals.node },
  },
  {
    // The third-party client scripts the tests run (tests/test_third_party_clients.py).
    files: ["tests/clients/**/*.mjs"],
    languageOptions: { ecmaVersion: 2022, sourceType: "module", globals: globals.node },
  },
];
