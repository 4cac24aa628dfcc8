package confdir

import (
	"bytes"
	"fmt"
	"io"

	"go.yaml.in/yaml/v3"
)

// Print writes the effective config as YAML, each value followed by a
// comment naming the file and line it came from (what `dsr-agent validate
// --print` shows). Comments of the sources are left out: only the values
// count.
func (m *Merged) Print(w io.Writer) error {
	if m.Root == nil {
		_, err := fmt.Fprintln(w, "# no config: every file is empty")
		return err
	}
	out := m.annotate(m.Root)
	var buf bytes.Buffer
	fmt.Fprintf(&buf, "# effective config, merged from %d file(s):\n", len(m.Files))
	for _, f := range m.Files {
		fmt.Fprintf(&buf, "#   %s\n", f.Path)
	}
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(out); err != nil {
		return fmt.Errorf("render effective config: %w", err)
	}
	if err := enc.Close(); err != nil {
		return fmt.Errorf("render effective config: %w", err)
	}
	_, err := w.Write(buf.Bytes())
	return err
}

// annotate copies the tree without the sources' comments and with each
// scalar value's origin as its line comment.
func (m *Merged) annotate(n *yaml.Node) *yaml.Node {
	c := &yaml.Node{Kind: n.Kind, Style: n.Style, Tag: n.Tag, Value: n.Value, Anchor: n.Anchor, Alias: n.Alias}
	if n.Kind == yaml.ScalarNode {
		c.LineComment = m.origins[n].String()
		return c
	}
	if n.Kind == yaml.SequenceNode || n.Kind == yaml.MappingNode {
		// Flow style would put the comments of several values on one line.
		c.Style &^= yaml.FlowStyle
	}
	for i, child := range n.Content {
		if n.Kind == yaml.MappingNode && i%2 == 0 {
			c.Content = append(c.Content, &yaml.Node{Kind: child.Kind, Tag: child.Tag, Value: child.Value, Style: child.Style})
			continue
		}
		if n.Kind == yaml.MappingNode && (child.Kind == yaml.MappingNode || child.Kind == yaml.SequenceNode) {
			// A list or mapping value: name the file of its key.
			cc := m.annotate(child)
			c.Content[len(c.Content)-1].LineComment = m.origins[n.Content[i-1]].String()
			c.Content = append(c.Content, cc)
			continue
		}
		c.Content = append(c.Content, m.annotate(child))
	}
	return c
}
