/** Sums the samples of one metric (optionally filtered by a label) over Prometheus texts. */
export function sumMetric(texts: string[], name: string, label?: string): number {
  let total = 0;
  for (const text of texts) {
    for (const line of text.split('\n')) {
      if (!line.startsWith(`${name}{`) && !line.startsWith(`${name} `)) continue;
      if (label && !line.includes(label)) continue;
      total += Number(line.slice(line.lastIndexOf(' ') + 1));
    }
  }
  return total;
}
