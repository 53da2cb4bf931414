/** `cass report`: the self-contained `report.html` of a `cass experiment` folder. */
import { parseArgs } from 'node:util'

import { writeReport } from '../../report/write.js'
import { UsageError } from '../shared.js'

export const usage = `cass report DIR

  Renders DIR/results.json (written by cass experiment) into DIR/report.html: the paper's table,
  label-efficiency curves, pre-training loss, spread and wall time, kNN, confusion matrices and
  robustness sweeps, as one HTML file with inline plots that opens offline. Prints its path.
`

export async function run(argv: string[]): Promise<void> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: { help: { type: 'boolean', default: false } },
  })
  if (values.help) return void process.stdout.write(usage)
  if (positionals.length !== 1)
    throw new UsageError('report needs one DIR, the folder of a cass experiment (see cass report --help)')
  process.stdout.write(`${writeReport(positionals[0])}\n`)
}
