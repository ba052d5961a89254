package ferretdb_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"go.mongodb.org/mongo-driver/bson"
	"go.mongodb.org/mongo-driver/mongo"
	"go.mongodb.org/mongo-driver/mongo/options"

	"github.com/veil-iot/veil/adapters/ferretdb"
)

func connect(t *testing.T, ctx context.Context, uri string) *mongo.Client {
	t.Helper()
	cl, err := mongo.Connect(ctx, options.Client().ApplyURI(uri).SetServerSelectionTimeout(5*time.Second))
	if err != nil {
		t.Fatalf("connect %s: %v", uri, err)
	}
	if err := cl.Ping(ctx, nil); err != nil {
		t.Fatalf("ping %s: %v", uri, err)
	}
	return cl
}

func TestStartPersistRestart(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	dir := t.TempDir()
	log := zerolog.New(zerolog.NewTestWriter(t))

	start := time.Now()
	srv, err := ferretdb.Start(ctx, dir, log)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Logf("started in %s at %s", time.Since(start), srv.URI())

	cl := connect(t, ctx, srv.URI())
	coll := cl.Database("veiltest").Collection("docs")
	if _, err := coll.InsertOne(ctx, bson.M{"_id": "a", "n": int64(42), "s": "hello"}); err != nil {
		t.Fatalf("insert: %v", err)
	}
	var got bson.M
	if err := coll.FindOne(ctx, bson.M{"_id": "a"}).Decode(&got); err != nil {
		t.Fatalf("find: %v", err)
	}
	if got["n"] != int64(42) || got["s"] != "hello" {
		t.Fatalf("got %v", got)
	}
	if err := cl.Disconnect(ctx); err != nil {
		t.Fatalf("disconnect: %v", err)
	}
	stop := time.Now()
	if err := srv.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	t.Logf("stopped in %s", time.Since(stop))
	if err := srv.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}

	if _, err := os.Stat(filepath.Join(dir, ferretdb.SubDir, "veiltest.sqlite")); err != nil {
		t.Fatalf("SQLite file: %v", err)
	}

	srv2, err := ferretdb.Start(ctx, dir, log)
	if err != nil {
		t.Fatalf("restart: %v", err)
	}
	defer srv2.Close()
	cl2 := connect(t, ctx, srv2.URI())
	defer cl2.Disconnect(ctx)
	got = nil
	if err := cl2.Database("veiltest").Collection("docs").FindOne(ctx, bson.M{"_id": "a"}).Decode(&got); err != nil {
		t.Fatalf("find after restart: %v", err)
	}
	if got["n"] != int64(42) || got["s"] != "hello" {
		t.Fatalf("after restart got %v", got)
	}
}

func TestStartEmptyDir(t *testing.T) {
	if _, err := ferretdb.Start(context.Background(), "", zerolog.Nop()); err == nil {
		t.Fatal("Start with empty data dir succeeded")
	}
}
