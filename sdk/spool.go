package sdk

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"

	phxv1 "github.com/phx-exchange/phx/proto/phx/v1"
)

// The outbox spool is a directory with one file per pending request:
//
//	<dir>/lock                     held (flock) while a Client uses the directory
//	<dir>/00000000000000000042.req a pending request, named by its sequence number
//	<dir>/.tmp-00000000000000000043 a request being written
//	<dir>/quarantine/              damaged files, moved aside when the spool is opened
//
// A request file is written as a temporary file, synced, renamed to its
// final name, and the directory synced, before the caller is told it is
// spooled. A crash leaves either no file, a temporary file (never promised
// to anyone; removed on open) or a whole request file. A request file is
// removed once the hub has answered it; if that removal is lost in a crash,
// the request is sent again with the same idempotency keys and the hub
// de-duplicates it.
//
// A request file is a 20-byte header followed by the request, a protobuf
// message of the kind the header names:
//
//	magic   [8]byte "PHXOUT1\n"
//	kind    uint8   (entryKind)
//	_       [3]byte zero
//	length  uint32  big endian, of the payload
//	crc     uint32  big endian, CRC-32C of kind, the three zero bytes and the payload
//	payload [length]byte

const (
	spoolMagic     = "PHXOUT1\n"
	spoolHeader    = 20
	spoolSuffix    = ".req"
	spoolTmpPrefix = ".tmp-"
	spoolLock      = "lock"
	spoolQuarant   = "quarantine"
)

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// entryKind is the request a spooled entry holds.
type entryKind uint8

const (
	kindSignals entryKind = iota + 1
	kindAnnounceRollout
	kindUpdateRollout
	kindReportIncident
	kindUpdateIncident
)

// method is the SDK method (and RPC) that sends the request.
func (k entryKind) method() string {
	switch k {
	case kindSignals:
		return "PublishSignals"
	case kindAnnounceRollout:
		return "AnnounceRollout"
	case kindUpdateRollout:
		return "UpdateRollout"
	case kindReportIncident:
		return "ReportIncident"
	case kindUpdateIncident:
		return "UpdateIncident"
	}
	return "kind " + strconv.Itoa(int(k))
}

// newRequest returns an empty request message of the kind, or nil for an
// unknown kind.
func (k entryKind) newRequest() proto.Message {
	switch k {
	case kindSignals:
		return &phxv1.PublishSignalsRequest{}
	case kindAnnounceRollout:
		return &phxv1.AnnounceRolloutRequest{}
	case kindUpdateRollout:
		return &phxv1.UpdateRolloutRequest{}
	case kindReportIncident:
		return &phxv1.ReportIncidentRequest{}
	case kindUpdateIncident:
		return &phxv1.UpdateIncidentRequest{}
	}
	return nil
}

// encodeEntry returns the file contents for a request.
func encodeEntry(kind entryKind, req proto.Message) ([]byte, error) {
	payload, err := proto.Marshal(req)
	if err != nil {
		return nil, err
	}
	b := make([]byte, spoolHeader, spoolHeader+len(payload))
	copy(b, spoolMagic)
	b[8] = byte(kind)
	binary.BigEndian.PutUint32(b[12:], uint32(len(payload)))
	binary.BigEndian.PutUint32(b[16:], entryCRC(b[8:12], payload))
	return append(b, payload...), nil
}

// entryCRC is the checksum of a request file: its kind and reserved bytes,
// then its payload.
func entryCRC(kind, payload []byte) uint32 {
	return crc32.Update(crc32.Checksum(kind, crcTable), crcTable, payload)
}

// decodeEntry checks and decodes a request file.
func decodeEntry(b []byte) (entryKind, proto.Message, error) {
	if len(b) < spoolHeader {
		return 0, nil, fmt.Errorf("%d bytes, shorter than the header", len(b))
	}
	if string(b[:8]) != spoolMagic {
		return 0, nil, errors.New("not an outbox file (bad magic)")
	}
	kind := entryKind(b[8])
	req := kind.newRequest()
	if req == nil {
		return 0, nil, fmt.Errorf("unknown request kind %d", b[8])
	}
	n := binary.BigEndian.Uint32(b[12:])
	if uint64(len(b)-spoolHeader) != uint64(n) {
		return 0, nil, fmt.Errorf("payload of %d bytes, header says %d (partial write?)", len(b)-spoolHeader, n)
	}
	payload := b[spoolHeader:]
	if entryCRC(b[8:12], payload) != binary.BigEndian.Uint32(b[16:]) {
		return 0, nil, errors.New("checksum mismatch")
	}
	if err := proto.Unmarshal(payload, req); err != nil {
		return 0, nil, fmt.Errorf("decode: %w", err)
	}
	if s, ok := req.(*phxv1.PublishSignalsRequest); ok && (len(s.GetSignals()) == 0 || len(s.GetSignals()) > MaxBatch) {
		return 0, nil, fmt.Errorf("%d signals in one entry", len(s.GetSignals()))
	}
	return kind, req, nil
}

// spool is the directory of an outbox.
type spool struct {
	dir  string
	lock *os.File
}

// spooled is a request file found when the spool was opened.
type spooled struct {
	seq  uint64
	kind entryKind
	req  proto.Message
	size int64
}

// openSpool creates or opens dir, takes its lock, removes temporary files
// left by a crash, moves damaged request files to dir/quarantine, and
// returns the pending requests in sequence order and the names of the files
// it quarantined.
func openSpool(dir string) (*spool, []spooled, []string, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, nil, nil, err
	}
	lf, err := os.OpenFile(filepath.Join(dir, spoolLock), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, nil, nil, err
	}
	if err := lockFile(lf); err != nil {
		lf.Close()
		return nil, nil, nil, fmt.Errorf("outbox %s is in use by another client: %w", dir, err)
	}
	s := &spool{dir: dir, lock: lf}
	found, quarantined, err := s.scan()
	if err != nil {
		s.close()
		return nil, nil, nil, err
	}
	return s, found, quarantined, nil
}

func (s *spool) scan() ([]spooled, []string, error) {
	des, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, nil, err
	}
	var found []spooled
	var quarantined []string
	for _, de := range des {
		name := de.Name()
		switch {
		case strings.HasPrefix(name, spoolTmpPrefix):
			// Never renamed, so never reported as spooled.
			if err := os.Remove(filepath.Join(s.dir, name)); err != nil {
				return nil, nil, err
			}
			continue
		case !strings.HasSuffix(name, spoolSuffix) || !de.Type().IsRegular():
			continue
		}
		seq, perr := strconv.ParseUint(strings.TrimSuffix(name, spoolSuffix), 10, 64)
		b, err := os.ReadFile(filepath.Join(s.dir, name))
		if err != nil {
			return nil, nil, err
		}
		kind, req, derr := decodeEntry(b)
		if perr != nil {
			derr = fmt.Errorf("bad file name: %w", perr)
		}
		if derr != nil {
			q, err := s.quarantine(name)
			if err != nil {
				return nil, nil, err
			}
			quarantined = append(quarantined, q+": "+derr.Error())
			continue
		}
		found = append(found, spooled{seq: seq, kind: kind, req: req, size: int64(len(b))})
	}
	slices.SortFunc(found, func(a, b spooled) int {
		switch {
		case a.seq < b.seq:
			return -1
		case a.seq > b.seq:
			return 1
		}
		return 0
	})
	if len(quarantined) > 0 {
		if err := syncDir(s.dir); err != nil {
			return nil, nil, err
		}
	}
	return found, quarantined, nil
}

// quarantine moves a damaged file into dir/quarantine and returns its new
// path relative to the spool.
func (s *spool) quarantine(name string) (string, error) {
	qdir := filepath.Join(s.dir, spoolQuarant)
	if err := os.MkdirAll(qdir, 0o700); err != nil {
		return "", err
	}
	to := name + "." + strconv.FormatInt(time.Now().UnixNano(), 10)
	if err := os.Rename(filepath.Join(s.dir, name), filepath.Join(qdir, to)); err != nil {
		return "", err
	}
	return filepath.Join(spoolQuarant, to), nil
}

func (s *spool) path(seq uint64) string {
	return filepath.Join(s.dir, fmt.Sprintf("%020d%s", seq, spoolSuffix))
}

// write stores data as request seq: temporary file, sync, rename. The
// caller syncs the directory (once for several writes) before it relies on
// the file.
func (s *spool) write(seq uint64, data []byte) (err error) {
	tmp := filepath.Join(s.dir, fmt.Sprintf("%s%020d", spoolTmpPrefix, seq))
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if _, err = f.Write(data); err != nil {
		return err
	}
	if err = f.Sync(); err != nil {
		return err
	}
	if err = f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, s.path(seq))
}

// remove deletes request seq. The directory is not synced: a removal lost
// in a crash only sends the request again.
func (s *spool) remove(seq uint64) error {
	err := os.Remove(s.path(seq))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return err
}

func (s *spool) sync() error { return syncDir(s.dir) }

// close releases the lock.
func (s *spool) close() error {
	if s.lock == nil {
		return nil
	}
	err := s.lock.Close() // closing the file releases the lock
	s.lock = nil
	return err
}
