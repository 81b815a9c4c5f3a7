// @ts-check
/**
 * ESLint 9 flat config with typescript-eslint's type-aware rules. Only rules that
 * catch real bugs here are on (a promise nobody awaits or that reaches a
 * callback expecting void, values never used, awaiting a non-promise, throwing a
 * non-Error, a switch that misses a case, comparing with ==), not style: the
 * type checker (`pnpm typecheck`) and review handle the rest.
 */
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

const MODEL_NAMES = '/^(Organization|OAuthClient|ProviderUser|SigningKey|UsedAssertion|RelayCursor|SyncState|Delivery|DeliveryAttempt)$/';

export default tseslint.config(
  { ignores: ['**/node_modules/**', '.cache/**', '.local/**', '**/dist/**', 'coverage/**', 'tools/**', 'bench/results/**', 'eslint.config.js'] },
  js.configs.recommended,
  tseslint.configs.eslintRecommended,
  {
    files: ['**/*.ts'],
    languageOptions: {
      parser: tseslint.parser,
      parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname },
    },
    plugins: { '@typescript-eslint': tseslint.plugin },
    linterOptions: { reportUnusedDisableDirectives: 'error' },
    rules: {
      // A promise nobody awaits loses its rejection (an unhandled rejection kills Node) and its ordering.
      '@typescript-eslint/no-floating-promises': 'error',
      // An async function where a callback's return is ignored (event handlers, forEach): same loss.
      '@typescript-eslint/no-misused-promises': 'error',
      '@typescript-eslint/await-thenable': 'error',
      // Inside try/catch, `return promise` skips the catch and the finally's ordering.
      '@typescript-eslint/return-await': ['error', 'in-try-catch'],
      '@typescript-eslint/only-throw-error': 'error',
      '@typescript-eslint/prefer-promise-reject-errors': 'error',
      '@typescript-eslint/no-for-in-array': 'error',
      '@typescript-eslint/no-base-to-string': 'error',
      '@typescript-eslint/switch-exhaustiveness-check': ['error', { considerDefaultExhaustiveForUnions: true }],
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_', caughtErrors: 'none', ignoreRestSiblings: true }],
      '@typescript-eslint/no-unused-expressions': 'error',
      'no-unused-vars': 'off',
      'no-unused-expressions': 'off',
      eqeqeq: ['error', 'smart'],
      'no-self-compare': 'error',
      'no-template-curly-in-string': 'error',
      'no-constant-binary-expression': 'error',
      // Regexes here are written to match control characters on purpose (NUL, lone surrogates in input checks).
      'no-control-regex': 'off',
    },
  },
  {
    // Data access (docs/guarantees.md): product code reads and writes through the typed
    // driver collections of collectionsOf(models); a mongoose model is only reached in
    // models.ts, which declares the collections and their indexes.
    files: ['apps/*/src/**/*.ts', 'packages/*/src/**/*.ts'],
    ignores: ['**/*.test.ts', 'packages/shared/src/models/models.ts'],
    rules: {
      'no-restricted-syntax': [
        'error',
        {
          selector: `MemberExpression[object.type='MemberExpression'][object.property.name=${MODEL_NAMES}]`,
          message: 'Read and write through collectionsOf(models) (typed driver collections), not a mongoose model.',
        },
        {
          selector: `VariableDeclarator[init.type='MemberExpression'][init.property.name='models'] > ObjectPattern > Property[key.name=${MODEL_NAMES}]`,
          message: 'Read and write through collectionsOf(models) (typed driver collections), not a mongoose model.',
        },
      ],
    },
  },
);
