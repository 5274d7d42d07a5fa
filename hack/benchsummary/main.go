// Command benchsummary reads `go test -bench -benchmem -count N` output on
// stdin and writes the make bench report's handler section: each
// benchmark's median (min–max) over the runs, and the ratio of the generic
// mutation path to ours (BenchmarkPodMutator/<pod>/generic/<level> over
// .../ours/<level>).
package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// A result line: name, iterations, then value-unit pairs.
var line = regexp.MustCompile(`^(Benchmark\S+?)(-\d+)?\s+\d+\s+(.*)$`)

type samples map[string][]float64 // by unit

func main() {
	if err := run(os.Stdin, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "benchsummary:", err)
		os.Exit(1)
	}
}

func run(in io.Reader, out io.Writer) error {
	var order []string
	results := map[string]samples{}
	var cpu string
	s := bufio.NewScanner(in)
	for s.Scan() {
		if v, ok := strings.CutPrefix(s.Text(), "cpu: "); ok {
			cpu = v
		}
		m := line.FindStringSubmatch(s.Text())
		if m == nil {
			continue
		}
		name := m[1]
		if results[name] == nil {
			results[name] = samples{}
			order = append(order, name)
		}
		fields := strings.Fields(m[3])
		for i := 0; i+1 < len(fields); i += 2 {
			v, err := strconv.ParseFloat(fields[i], 64)
			if err != nil {
				return fmt.Errorf("%s: %q is not a number", name, fields[i])
			}
			results[name][fields[i+1]] = append(results[name][fields[i+1]], v)
		}
	}
	if err := s.Err(); err != nil {
		return err
	}
	if len(order) == 0 {
		return fmt.Errorf("no benchmark results on stdin")
	}

	runs := len(results[order[0]]["ns/op"])
	fmt.Fprintf(out, "## Handlers: Go benchmarks\n\nCPU: %s. Median (min–max) of %d runs.\n\n", cpu, runs)
	fmt.Fprintln(out, "| Benchmark | µs/op | B/op | allocs/op | other |")
	fmt.Fprintln(out, "|---|---|---|---|---|")
	for _, name := range order {
		r := results[name]
		var other []string
		for unit, v := range r {
			if unit != "ns/op" && unit != "B/op" && unit != "allocs/op" && unit != "MB/s" {
				other = append(other, spread(v, 1, "%.0f")+" "+unit)
			}
		}
		slices.Sort(other)
		fmt.Fprintf(out, "| %s | %s | %s | %s | %s |\n", strings.TrimPrefix(name, "Benchmark"),
			spread(r["ns/op"], 1e-3, "%.1f"), spread(r["B/op"], 1, "%.0f"), spread(r["allocs/op"], 1, "%.0f"), strings.Join(other, ", "))
	}

	fmt.Fprintln(out, "\n### The generic mutation path over ours (median ns/op ratio)")
	fmt.Fprintln(out, "\n| Pod | Level | generic / ours |")
	fmt.Fprintln(out, "|---|---|---|")
	for _, name := range order {
		rest, ok := strings.CutPrefix(name, "BenchmarkPodMutator/")
		if !ok || !strings.Contains(rest, "/ours/") {
			continue
		}
		generic := results["BenchmarkPodMutator/"+strings.Replace(rest, "/ours/", "/generic/", 1)]
		if generic == nil {
			continue
		}
		pod, level, _ := strings.Cut(rest, "/ours/")
		fmt.Fprintf(out, "| %s | %s | %.1f× |\n", pod, level, median(generic["ns/op"])/median(results[name]["ns/op"]))
	}
	return nil
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 0 {
		return (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return s[len(s)/2]
}

// spread formats median (min–max) of v scaled by scale.
func spread(v []float64, scale float64, verb string) string {
	if len(v) == 0 {
		return "–"
	}
	lo, hi := slices.Min(v)*scale, slices.Max(v)*scale
	if len(v) == 1 || lo == hi {
		return fmt.Sprintf(verb, median(v)*scale)
	}
	return fmt.Sprintf(verb+" ("+verb+"–"+verb+")", median(v)*scale, lo, hi)
}
