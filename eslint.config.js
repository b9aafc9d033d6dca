// ESLint (typescript-eslint) for src/, test/ and bench/; Prettier owns the layout (docs/testing.md "Running").
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

const ETCD = { name: 'etcd3', message: 'only src/store/ talks to etcd' };
const FASTIFY = { name: 'fastify', message: 'only src/api/ serves HTTP' };

export default tseslint.config(
  { ignores: ['dist/**', 'native/build/**', 'node_modules/**'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    files: ['**/*.ts'],
    languageOptions: { parserOptions: { projectService: false } },
    rules: {
      // Names with a leading underscore say "unused on purpose" (interface parameters of fakes).
      '@typescript-eslint/no-unused-vars': [
        'error',
        { argsIgnorePattern: '^_', varsIgnorePattern: '^_', caughtErrors: 'none' },
      ],
      '@typescript-eslint/consistent-type-imports': ['error', { fixStyle: 'inline-type-imports' }],
      'no-restricted-syntax': [
        'error',
        {
          selector: "CallExpression[callee.property.name='only'][callee.object.name=/^(it|test|describe)$/]",
          message: 'no focused tests',
        },
      ],
      eqeqeq: ['error', 'always'],
      'prefer-const': ['error', { ignoreReadBeforeAssign: true }],
    },
  },
  // Tests read JSON answers loosely.
  { files: ['test/**/*.ts', 'bench/**/*.ts'], rules: { '@typescript-eslint/no-explicit-any': 'off' } },
  // etcd3 belongs to the store, fastify to the API (docs/architecture.md "Dependencies").
  {
    files: ['src/**/*.ts'],
    ignores: ['src/api/**', 'src/store/**'],
    rules: { 'no-restricted-imports': ['error', { paths: [ETCD, FASTIFY] }] },
  },
  { files: ['src/api/**/*.ts'], rules: { 'no-restricted-imports': ['error', { paths: [ETCD] }] } },
  { files: ['src/store/**/*.ts'], rules: { 'no-restricted-imports': ['error', { paths: [FASTIFY] }] } },
);
