package bridge

import (
	"encoding/hex"
	"math"
	"net/url"
	"reflect"
	"strconv"
	"testing"
)

// FuzzResendQuery parses the HTTP API's resend requests as any local client
// can send them: stream ID and partition from the path, query kind, and the
// query string. An accepted query is within the limits the parser promises
// and reads the same when written back as a request; a refused one says why.
func FuzzResendQuery(f *testing.F) {
	id := url.PathEscape(testAddress + "/home/temp")
	f.Add(id, "0", "last", "count=10&format=raw")
	f.Add(id, "99", "from", "fromTimestamp=1700000000000&fromSequenceNumber=2&publisherId="+testAddress)
	f.Add(id, "3", "range", "fromTimestamp=2023-11-14T22:13:20Z&toTimestamp=1700000000001&toSequenceNumber=5&msgChainId=abc")
	f.Add("streamr.eth%2Fa%2Fb", "1", "range", "fromTimestamp=1&fromSequenceNumber=2147483648")
	f.Add("%zz", "0", "last", "count=1")
	f.Add(id, "-1", "last", "count=0")
	f.Add(id, "0", "from", "fromTimestamp=abc&publisherId=0xZZ")
	f.Add(id, "0", "last", "count=1000001;x=%")
	f.Fuzz(func(t *testing.T, rawID, partition, kind, rawQuery string) {
		v, _ := url.ParseQuery(rawQuery) // as r.URL.Query() reads it: what parses, parses
		q, err := parseResendQuery(rawID, partition, kind, v)
		if err != nil {
			if err.Error() == "" {
				t.Fatal("refused with an empty error")
			}
			return
		}
		switch {
		case q.Part.Partition < 0 || q.Part.Partition > 99:
			t.Fatalf("partition %d accepted", q.Part.Partition)
		case kind == "last" && (q.Last < 1 || q.Last > 1_000_000):
			t.Fatalf("last count %d accepted", q.Last)
		case kind != "last" && q.Last != 0:
			t.Fatalf("%s query with Last %d", kind, q.Last)
		case q.From.SequenceNumber < 0 || q.To.SequenceNumber < 0:
			t.Fatalf("negative sequence number in %+v", q)
		case kind == "from" && (q.To.Timestamp != math.MaxInt64 || q.To.SequenceNumber != math.MaxInt32):
			t.Fatalf("from query bounded above: %+v", q.To)
		}

		// Written back as the parameters of its kind, q reads the same.
		back := url.Values{}
		if q.Publisher != nil {
			back.Set("publisherId", "0x"+hex.EncodeToString(q.Publisher))
		}
		if q.ChainID != "" {
			back.Set("msgChainId", q.ChainID)
		}
		switch kind {
		case "last":
			back.Set("count", strconv.Itoa(q.Last))
		case "range":
			back.Set("toTimestamp", strconv.FormatInt(q.To.Timestamp, 10))
			back.Set("toSequenceNumber", strconv.Itoa(int(q.To.SequenceNumber)))
			fallthrough
		case "from":
			back.Set("fromTimestamp", strconv.FormatInt(q.From.Timestamp, 10))
			back.Set("fromSequenceNumber", strconv.Itoa(int(q.From.SequenceNumber)))
		}
		again, err := parseResendQuery(url.PathEscape(string(q.Part.Stream)), strconv.Itoa(q.Part.Partition), kind, back)
		if err != nil {
			t.Fatalf("query %+v written back is refused: %v", q, err)
		}
		if !reflect.DeepEqual(again, q) {
			t.Fatalf("query %+v written back reads %+v", q, again)
		}
	})
}
