package confdir

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Merged is the effective config tree and where each value came from.
type Merged struct {
	// Root is a mapping node, or nil when every file was empty.
	Root *yaml.Node
	// Files are the sources, in the order they were merged.
	Files   []File
	origins map[*yaml.Node]Origin
	paths   map[string]*yaml.Node
}

// Parse decodes one file into its document's top node (nil for a file with
// no document: empty or only comments). It rejects more than one document,
// a top level that is not a mapping, and a key written twice in one
// mapping -- yaml.v3 checks the last only when decoding into a struct,
// and in a merge "twice in one file" must not look like "a later file wins".
func Parse(f File) (*yaml.Node, error) {
	dec := yaml.NewDecoder(bytes.NewReader(f.Data))
	var doc yaml.Node
	err := dec.Decode(&doc)
	if errors.Is(err, io.EOF) {
		return nil, nil
	}
	if err != nil {
		return nil, &Error{At: Origin{File: f.Path, Line: yamlErrLine(err)}, Msg: strings.TrimPrefix(stripLine(err.Error()), "yaml: ")}
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return nil, &Error{At: Origin{File: f.Path, Line: extra.Line}, Msg: "more than one YAML document (---): expected exactly one"}
	}
	if len(doc.Content) == 0 {
		return nil, nil
	}
	top := doc.Content[0]
	if top.Kind == yaml.ScalarNode && top.Tag == "!!null" {
		return nil, nil
	}
	if top.Kind != yaml.MappingNode {
		return nil, &Error{At: Origin{File: f.Path, Line: top.Line}, Msg: "expected a mapping of keys (mode:, vips:, ...) at the top level"}
	}
	if err := checkDuplicates(f.Path, top); err != nil {
		return nil, err
	}
	return top, nil
}

func checkDuplicates(file string, n *yaml.Node) error {
	switch n.Kind {
	case yaml.MappingNode:
		seen := map[string]int{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k := n.Content[i]
			if line, ok := seen[k.Value]; ok {
				return &Error{At: Origin{File: file, Line: k.Line}, Msg: fmt.Sprintf("key %q set twice in one mapping (also at line %d): write it once", k.Value, line)}
			}
			seen[k.Value] = k.Line
			if err := checkDuplicates(file, n.Content[i+1]); err != nil {
				return err
			}
		}
	case yaml.SequenceNode:
		for _, c := range n.Content {
			if err := checkDuplicates(file, c); err != nil {
				return err
			}
		}
	}
	return nil
}

// Merge parses and merges files in order. Every error names its file and
// line.
func Merge(files []File) (*Merged, error) {
	m := &Merged{Files: files, origins: map[*yaml.Node]Origin{}}
	for _, f := range files {
		top, err := Parse(f)
		if err != nil {
			return nil, err
		}
		if top == nil {
			continue
		}
		m.record(f.Path, top)
		if m.Root == nil {
			m.Root = top
			continue
		}
		if err := m.merge(m.Root, top, ""); err != nil {
			return nil, err
		}
	}
	m.index()
	return m, nil
}

// record remembers the file of every node of a tree (yaml.Node has the
// line but not the file).
func (m *Merged) record(file string, n *yaml.Node) {
	m.origins[n] = Origin{File: file, Line: n.Line}
	for _, c := range n.Content {
		m.record(file, c)
	}
}

func kindWord(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.AliasNode:
		return "an alias"
	}
	return "a value"
}

func isNull(n *yaml.Node) bool { return n.Kind == yaml.ScalarNode && n.Tag == "!!null" }

// merge folds src into dst (both mappings).
func (m *Merged) merge(dst, src *yaml.Node, path string) error {
	for i := 0; i+1 < len(src.Content); i += 2 {
		sk, sv := src.Content[i], src.Content[i+1]
		p := join(path, sk.Value)
		j := mapIndex(dst, sk.Value)
		if j < 0 {
			dst.Content = append(dst.Content, sk, sv)
			continue
		}
		dk, dv := dst.Content[j], dst.Content[j+1]
		switch {
		case dv.Kind == yaml.ScalarNode && sv.Kind == yaml.ScalarNode, isNull(dv):
			// A later scalar wins; so does anything over an empty `key:`.
			dst.Content[j], dst.Content[j+1] = sk, sv
		case dv.Kind == yaml.MappingNode && sv.Kind == yaml.MappingNode:
			if err := m.merge(dv, sv, p); err != nil {
				return err
			}
		case dv.Kind == yaml.SequenceNode && sv.Kind == yaml.SequenceNode:
			dv.Content = append(dv.Content, sv.Content...)
		default:
			return &Error{At: m.origins[sk], Msg: fmt.Sprintf("%s is %s here but %s at %s: a drop-in extends a list or mapping, or replaces a value, of the same kind",
				p, kindWord(sv), kindWord(dv), m.origins[dk])}
		}
	}
	return nil
}

func mapIndex(n *yaml.Node, key string) int {
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			return i
		}
	}
	return -1
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// index records the field path of every node of the merged tree, in the
// form agent's messages use: vips[1].ports[0].port.
func (m *Merged) index() {
	m.paths = map[string]*yaml.Node{}
	if m.Root == nil {
		return
	}
	var walk func(n *yaml.Node, path string)
	walk = func(n *yaml.Node, path string) {
		m.paths[path] = n
		switch n.Kind {
		case yaml.MappingNode:
			for i := 0; i+1 < len(n.Content); i += 2 {
				p := join(path, n.Content[i].Value)
				// The key's line is where an operator looks for the field.
				m.paths[p+"\x00key"] = n.Content[i]
				walk(n.Content[i+1], p)
			}
		case yaml.SequenceNode:
			for i, c := range n.Content {
				walk(c, fmt.Sprintf("%s[%d]", path, i))
			}
		}
	}
	walk(m.Root, "")
}

// Origin says where the field at path (vips[1].address, health.listen) was
// written. For a path that names no node (a default, or a field of an
// entry that was left out) it answers the closest enclosing node that was
// written, so a message can still point at the right entry.
func (m *Merged) Origin(path string) (Origin, bool) {
	if m == nil || m.paths == nil {
		return Origin{}, false
	}
	for p := path; ; {
		if k, ok := m.paths[p+"\x00key"]; ok {
			return m.origins[k], true
		}
		if n, ok := m.paths[p]; ok && p != "" {
			return m.origins[n], true
		}
		cut := strings.LastIndexAny(p, ".[")
		if cut <= 0 {
			return Origin{}, false
		}
		p = p[:cut]
	}
}

// yamlErrLine pulls the line out of yaml.v3's "yaml: line 3: ..." message.
func yamlErrLine(err error) int {
	s := strings.TrimPrefix(err.Error(), "yaml: ")
	if rest, ok := strings.CutPrefix(s, "line "); ok {
		if i := strings.IndexByte(rest, ':'); i > 0 {
			if n, err := strconv.Atoi(rest[:i]); err == nil {
				return n
			}
		}
	}
	return 0
}

// stripLine removes the "line N: " yaml.v3 puts in front: Error says the
// file and the line together.
func stripLine(s string) string {
	s = strings.TrimPrefix(s, "yaml: ")
	if rest, ok := strings.CutPrefix(s, "line "); ok {
		if i := strings.Index(rest, ": "); i > 0 {
			if _, err := strconv.Atoi(rest[:i]); err == nil {
				return rest[i+2:]
			}
		}
	}
	return s
}
