package check

// Where in its file a field of an object is: for SARIF's region.startLine.

import (
	"strconv"
	"strings"

	yaml "go.yaml.in/yaml/v3"
)

// FieldLine returns the line of o's file that holds the field at path
// ("spec.template.spec.containers[0].image", as field.Path renders it):
// the deepest part of the path the document has, so that a field the
// object leaves out points at its parent. Without a path, or when the
// document cannot tell, it is the line o's document starts on; 0 when o
// was not read from a file.
func (o *Object) FieldLine(path string) int {
	if o.Line == 0 {
		return 0
	}
	var root yaml.Node
	if len(o.doc) == 0 || yaml.Unmarshal(o.doc, &root) != nil || len(root.Content) == 0 {
		return o.Line
	}
	n := root.Content[0]
	for _, i := range o.items { // the object inside its List
		if n = child(n, "items"); n == nil || n.Kind != yaml.SequenceNode || i >= len(n.Content) {
			return o.Line
		}
		n = n.Content[i]
	}
	line := n.Line
	for _, seg := range fieldSegments(path) {
		var key *yaml.Node
		if seg.name != "" {
			key, n = entry(n, seg.name)
		} else if n.Kind == yaml.SequenceNode && seg.index < len(n.Content) {
			key, n = nil, n.Content[seg.index]
		} else {
			n = nil
		}
		if n == nil {
			break
		}
		line = n.Line
		if key != nil {
			line = key.Line
		}
	}
	return o.Line + line - 1
}

// entry returns the key and value nodes of name in the mapping n (nil, nil
// when n is not a mapping or has no such key).
func entry(n *yaml.Node, name string) (key, value *yaml.Node) {
	if n == nil || n.Kind != yaml.MappingNode {
		return nil, nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == name {
			return n.Content[i], n.Content[i+1]
		}
	}
	return nil, nil
}

func child(n *yaml.Node, name string) *yaml.Node {
	_, v := entry(n, name)
	return v
}

// segment is one step of a field path: a name (a map key, "[key]"
// included) or a list index.
type segment struct {
	name  string
	index int
}

// fieldSegments splits a field.Path string: names joined by ".", indexes
// and keys in brackets ("data[k8s-api-server]", "containers[0]"); a key
// in brackets may hold dots.
func fieldSegments(path string) []segment {
	var out []segment
	for len(path) > 0 {
		switch path[0] {
		case '.':
			path = path[1:]
		case '[':
			end := strings.IndexByte(path, ']')
			if end < 0 {
				return out
			}
			inner := path[1:end]
			if i, err := strconv.Atoi(inner); err == nil {
				out = append(out, segment{index: i})
			} else {
				out = append(out, segment{name: inner})
			}
			path = path[end+1:]
		default:
			end := strings.IndexAny(path, ".[")
			if end < 0 {
				end = len(path)
			}
			out = append(out, segment{name: path[:end]})
			path = path[end:]
		}
	}
	return out
}
