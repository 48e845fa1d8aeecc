package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"maps"
	"slices"
	"strings"
)

// stringList is a repeatable string flag (--arg k=v --arg k2=v2).
type stringList []string

func (l *stringList) String() string { return strings.Join(*l, " ") }

// Set appends one occurrence of the flag.
func (l *stringList) Set(v string) error { *l = append(*l, v); return nil }

// parseArgValue turns the value of --arg k=v into JSON: v itself when it is
// a valid JSON value (100, true, null, "quoted", [1,2], {"a":1}), otherwise
// v as a JSON string, so --arg grep=error needs no quoting.
func parseArgValue(v string) json.RawMessage {
	trimmed := strings.TrimSpace(v)
	if trimmed != "" && json.Valid([]byte(trimmed)) {
		return json.RawMessage(trimmed)
	}
	b, _ := json.Marshal(v) // marshalling a string cannot fail
	return b
}

// buildArgs merges the --args JSON object with the --arg k=v pairs (which
// win over --args for the same key) into one JSON object. It returns nil
// when neither is given.
func buildArgs(argsJSON string, pairs []string) (json.RawMessage, error) {
	obj := map[string]json.RawMessage{}
	if strings.TrimSpace(argsJSON) != "" {
		dec := json.NewDecoder(strings.NewReader(argsJSON))
		if err := dec.Decode(&obj); err != nil || obj == nil {
			return nil, fmt.Errorf(`--args must be a JSON object, such as '{"tail":100}'`)
		}
		if dec.More() {
			return nil, fmt.Errorf("--args has data after the JSON object")
		}
	}
	for _, p := range pairs {
		k, v, ok := strings.Cut(p, "=")
		k = strings.TrimSpace(k)
		if !ok || k == "" {
			return nil, fmt.Errorf("--arg %q must be key=value, such as --arg tail=100", p)
		}
		obj[k] = parseArgValue(v)
	}
	if len(obj) == 0 && strings.TrimSpace(argsJSON) == "" {
		return nil, nil
	}
	// Marshal with sorted keys, so the body is stable.
	var buf bytes.Buffer
	buf.WriteByte('{')
	for i, k := range sortedKeys(obj) {
		if i > 0 {
			buf.WriteByte(',')
		}
		kb, _ := json.Marshal(k)
		buf.Write(kb)
		buf.WriteByte(':')
		if err := json.Compact(&buf, obj[k]); err != nil {
			return nil, fmt.Errorf("argument %q: %v", k, err)
		}
	}
	buf.WriteByte('}')
	return buf.Bytes(), nil
}

// sortedKeys returns the keys of m in order.
func sortedKeys[V any](m map[string]V) []string { return slices.Sorted(maps.Keys(m)) }

// reorderArgs moves every flag (with its value, when the flag takes one) in
// front of the positional arguments, so flags may follow them:
// `publisher status po --json` parses like `publisher --json status po`.
// A "--" ends the flags; everything after it is positional. The result
// always ends with "--" and then the positional arguments, so a positional
// argument is never read as a flag.
func reorderArgs(fs *flag.FlagSet, args []string) []string {
	var flags, positional []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			positional = append(positional, args[i+1:]...)
			break
		}
		if len(a) < 2 || a[0] != '-' {
			positional = append(positional, a)
			continue
		}
		flags = append(flags, a)
		name := strings.TrimLeft(a, "-")
		if strings.Contains(name, "=") {
			continue
		}
		f := fs.Lookup(name)
		if f == nil || isBoolFlag(f) {
			continue
		}
		if i+1 < len(args) {
			i++
			flags = append(flags, args[i])
		}
	}
	out := make([]string, 0, len(flags)+1+len(positional))
	out = append(out, flags...)
	out = append(out, "--")
	return append(out, positional...)
}

func isBoolFlag(f *flag.Flag) bool {
	b, ok := f.Value.(interface{ IsBoolFlag() bool })
	return ok && b.IsBoolFlag()
}
