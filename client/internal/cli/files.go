package cli

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	phxv1 "github.com/phx-exchange/phx/proto/phx/v1"
)

// readInput reads a file, or standard input for "-".
func readInput(name string) ([]byte, error) {
	if name == "-" {
		return io.ReadAll(stdin)
	}
	return os.ReadFile(name)
}

func displayName(name string) string {
	if name == "-" {
		return "stdin"
	}
	return name
}

// parseSignals reads health signals in protojson, either as one JSON array
// or as a stream of objects (NDJSON: one per line).
func parseSignals(data []byte, name string) ([]*phxv1.HealthSignal, error) {
	name = displayName(name)
	data = bytes.TrimPrefix(data, []byte("\xef\xbb\xbf")) // UTF-8 BOM
	trimmed := bytes.TrimSpace(data)
	if len(trimmed) == 0 {
		return nil, fmt.Errorf("%s: no signals", name)
	}
	var out []*phxv1.HealthSignal
	if trimmed[0] == '[' {
		var items []json.RawMessage
		if err := json.Unmarshal(trimmed, &items); err != nil {
			return nil, fmt.Errorf("%s: %v", name, err)
		}
		for i, raw := range items {
			s := &phxv1.HealthSignal{}
			if err := protojson.Unmarshal(raw, s); err != nil {
				return nil, fmt.Errorf("%s: item %d: %v", name, i, err)
			}
			out = append(out, s)
		}
	} else {
		dec := json.NewDecoder(bytes.NewReader(data))
		for {
			// The next value starts after the whitespace that follows the
			// previous one; count lines up to it.
			start := int(dec.InputOffset())
			rest := data[start:]
			start += len(rest) - len(bytes.TrimLeft(rest, " \t\r\n"))
			line := 1 + bytes.Count(data[:start], []byte("\n"))
			var raw json.RawMessage
			err := dec.Decode(&raw)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return nil, fmt.Errorf("%s: line %d: %v", name, line, err)
			}
			s := &phxv1.HealthSignal{}
			if err := protojson.Unmarshal(raw, s); err != nil {
				return nil, fmt.Errorf("%s: line %d: %v", name, line, err)
			}
			out = append(out, s)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s: no signals", name)
	}
	return out, nil
}

// readMessage reads one protojson object from a file (or "-") into m.
func readMessage(name string, m proto.Message) error {
	data, err := readInput(name)
	if err != nil {
		return err
	}
	if err := protojson.Unmarshal(data, m); err != nil {
		return fmt.Errorf("%s: %v", displayName(name), err)
	}
	return nil
}
