// Interop client: the real server called from Go's own gRPC implementation
// (grpc-go from Debian's golang-google-grpc-dev), with stubs generated at test
// time by protoc-gen-go and protoc-gen-go-grpc from the repository's .proto
// files. It runs a fixed script of calls and prints one JSON object of
// {"steps": [{"step", "result"}]}; test/interop-go.test.ts checks the results.
// Usage: interop_client HOST:PORT
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"time"

	pb "ripplecache/gen/ripplecache/v1"

	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
)

type step struct {
	Step   string      `json:"step"`
	Result interface{} `json:"result"`
}

var steps []step

func record(name string, result interface{}) { steps = append(steps, step{name, result}) }

// failure is what a failed call reports: its gRPC code and message.
func failure(err error) map[string]interface{} {
	s, _ := status.FromError(err)
	return map[string]interface{}{"code": s.Code().String(), "message": s.Message()}
}

func fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, format+"\n", args...)
	os.Exit(1)
}

func main() {
	if len(os.Args) != 2 {
		fail("usage: interop_client HOST:PORT")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	conn, err := grpc.DialContext(ctx, os.Args[1], grpc.WithInsecure(), grpc.WithBlock())
	if err != nil {
		fail("dial: %v", err)
	}
	defer conn.Close()
	client := pb.NewCacheServiceClient(conn)

	// A watch first, so that it sees the writes below.
	watch, err := client.Watch(ctx, &pb.WatchRequest{Target: &pb.WatchRequest_Prefix{Prefix: "go/"}, WithValues: true})
	if err != nil {
		fail("watch: %v", err)
	}
	created, err := watch.Recv()
	if err != nil || created.GetCreated() == nil {
		fail("watch: no created message: %v %v", created, err)
	}

	set, err := client.Set(ctx, &pb.SetRequest{Key: "go/a", Value: []byte{0, 'h', 'i', 0xff}, TtlMs: 60000, Flags: 7})
	if err != nil {
		fail("set: %v", err)
	}
	record("set", map[string]interface{}{"applied": set.Applied, "revision": set.Revision})

	get, err := client.Get(ctx, &pb.GetRequest{Key: "go/a"})
	if err != nil {
		fail("get: %v", err)
	}
	record("get", map[string]interface{}{"found": get.Found, "value": get.Value, "revision": get.Revision, "ttl_ms": get.TtlMs, "flags": get.Flags})

	miss, err := client.Get(ctx, &pb.GetRequest{Key: "go/missing"})
	if err != nil {
		fail("miss: %v", err)
	}
	record("miss", map[string]interface{}{"found": miss.Found, "revision": miss.Revision})

	many, err := client.GetMany(ctx, &pb.GetManyRequest{Keys: []string{"go/a", "go/missing"}})
	if err != nil {
		fail("get many: %v", err)
	}
	entries := []map[string]interface{}{}
	for _, e := range many.Entries {
		entries = append(entries, map[string]interface{}{"key": e.Key, "found": e.Found, "value": e.Value})
	}
	record("get_many", entries)

	incr, err := client.Increment(ctx, &pb.IncrementRequest{Key: "go/n", Delta: -9223372036854775807})
	if err != nil {
		fail("increment: %v", err)
	}
	record("increment", map[string]interface{}{"value": fmt.Sprint(incr.Value)})
	_, err = client.Increment(ctx, &pb.IncrementRequest{Key: "go/n", Delta: -2})
	record("increment_overflow", failure(err))

	_, err = client.Get(ctx, &pb.GetRequest{Key: ""})
	record("empty_key", failure(err))

	del, err := client.Delete(ctx, &pb.DeleteRequest{Key: "go/a"})
	if err != nil {
		fail("delete: %v", err)
	}
	record("delete", map[string]interface{}{"deleted": del.Deleted, "revision": del.Revision})

	// The watch saw the put, the increment and the delete, in revision order.
	events := []map[string]interface{}{}
	for len(events) < 3 {
		msg, err := watch.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			fail("watch recv: %v", err)
		}
		for _, e := range msg.GetEvents().GetEvents() {
			events = append(events, map[string]interface{}{"type": e.Type.String(), "key": e.Key, "revision": e.Revision, "value": e.Value})
		}
	}
	record("watch", events)

	// A deadline shorter than the call: DEADLINE_EXCEEDED, from a watch that would run forever.
	short, cancelShort := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancelShort()
	idle, err := client.Watch(short, &pb.WatchRequest{Target: &pb.WatchRequest_Key{Key: "go/never"}})
	if err == nil {
		for err == nil {
			_, err = idle.Recv()
		}
	}
	record("deadline", map[string]interface{}{"code": status.Code(err).String()})

	// Client streaming: Load of 10 entries.
	load, err := client.Load(ctx)
	if err != nil {
		fail("load: %v", err)
	}
	for i := 0; i < 10; i++ {
		if err := load.Send(&pb.LoadRequest{Key: fmt.Sprintf("go/load/%d", i), Value: []byte("0123456789")}); err != nil {
			fail("load send: %v", err)
		}
	}
	loaded, err := load.CloseAndRecv()
	if err != nil {
		fail("load close: %v", err)
	}
	record("load", map[string]interface{}{"count": loaded.Count, "bytes": loaded.Bytes})

	// Bidi: Track a key, then a ping answered by a pong with the same id.
	track, err := client.Track(ctx)
	if err != nil {
		fail("track: %v", err)
	}
	if err := track.Send(&pb.TrackRequest{Kind: &pb.TrackRequest_Track{Track: &pb.TrackKeys{Keys: []string{"go/load/1"}}}}); err != nil {
		fail("track send: %v", err)
	}
	tracked, err := track.Recv()
	if err != nil {
		fail("track recv: %v", err)
	}
	if err := track.Send(&pb.TrackRequest{Kind: &pb.TrackRequest_Ping{Ping: &pb.Ping{Id: 77}}}); err != nil {
		fail("ping send: %v", err)
	}
	pong, err := track.Recv()
	if err != nil {
		fail("pong recv: %v", err)
	}
	_ = track.CloseSend()
	record("track", map[string]interface{}{"tracked_keys": tracked.GetTracked().GetTrackedKeys(), "pong_id": pong.GetPong().GetId()})

	health, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: ""})
	if err != nil {
		fail("health: %v", err)
	}
	record("health", map[string]interface{}{"status": health.Status.String()})

	// Unknown method: UNIMPLEMENTED, as any gRPC server answers.
	err = conn.Invoke(ctx, "/ripplecache.v1.CacheService/NoSuchMethod", &pb.GetRequest{}, &pb.GetResponse{})
	record("unimplemented", map[string]interface{}{"code": status.Code(err).String()})

	out, _ := json.Marshal(map[string]interface{}{"steps": steps})
	fmt.Println(string(out))
}
