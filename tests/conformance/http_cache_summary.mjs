// Counts the results of http-cache-tests' command-line run by the kinds its own pages show
// (lib/display.mjs: pass, fail, optional_fail, dependency_fail, setup_fail, ...), for the tests
// that the command line runs. Usage: node http_cache_summary.mjs PACKAGE_DIR RESULTS_JSON
import { readFileSync } from 'fs'
import { join } from 'path'
import { pathToFileURL } from 'url'

const [packageDir, resultsFile] = process.argv.slice(2)
const load = path => import(pathToFileURL(join(packageDir, path)).href)
const display = await load('lib/display.mjs')
const suites = (await load('tests/index.mjs')).default
suites.push((await load('tests/surrogate-control.mjs')).default) // as cli.mjs does
const results = JSON.parse(readFileSync(resultsFile, 'utf8'))

// determineTestResult answers [icon, colour, symbol]; the symbols, by the kind each stands for.
const kindOf = {
  '-': 'untested', '✅': 'pass', '⛔️': 'fail', '⚠️': 'optional_fail', Y: 'yes', N: 'no', '🔹': 'setup_fail',
  '⁉️': 'harness_fail', '⚪️': 'dependency_fail', '↻': 'retry'
}
const counts = Object.fromEntries(Object.values(kindOf).map(kind => [kind, 0]))
// The tests behind the counts that call for a look: conformance failures, and the harness's own.
const named = { fail: [], setup_fail: [], harness_fail: [], retry: [] }
for (const suite of suites) {
  for (const test of suite.tests) {
    if (test.browser_only === true) continue // the command line skips them
    const kind = kindOf[display.determineTestResult(suites, test.id, results)[2]]
    counts[kind] += 1
    if (kind in named) named[kind].push(test.id)
  }
}
console.log(JSON.stringify({ counts, named }))
