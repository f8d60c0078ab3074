package storage

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/iceberg-go"
	"github.com/apache/iceberg-go/catalog"

	// Glue and REST catalogs register themselves with catalog.Load.
	_ "github.com/apache/iceberg-go/catalog/glue"
	_ "github.com/apache/iceberg-go/catalog/rest"
	sqlcat "github.com/apache/iceberg-go/catalog/sql"

	// The S3 FileIO: warehouses on s3:// (AWS, or an S3-compatible store
	// through the s3.endpoint property).
	_ "github.com/apache/iceberg-go/io/gocloud/s3"
	"github.com/apache/iceberg-go/table"
	"github.com/uptrace/bun/driver/sqliteshim"
)

// Catalog types the enricher can open.
const (
	// CatalogSQL is iceberg-go's SQL catalog on a sqlite file.
	CatalogSQL = "sql"
	// CatalogGlue is the AWS Glue Data Catalog (region and credentials
	// from the AWS chain, or glue.region, glue.id, ... in properties).
	CatalogGlue = "glue"
	// CatalogREST is an Iceberg REST catalog at URI (S3 Tables, Polaris,
	// Nessie, ...); auth settings go in properties.
	CatalogREST = "rest"
)

// CatalogConfig says which Iceberg catalog holds the tables.
type CatalogConfig struct {
	// Name is the catalog's name, stored with every table it registers.
	Name string `yaml:"name"`
	// Type is the catalog kind: "sql" is iceberg-go's SQL catalog on a
	// sqlite file (the embedded default), "glue" the AWS Glue Data
	// Catalog, "rest" an Iceberg REST catalog.
	Type string `yaml:"type"`
	// URI is the sqlite file of a sql catalog, the endpoint of a rest one.
	URI string `yaml:"uri"`
	// Warehouse is where table data and metadata go: a local folder, a
	// file:// URL or an s3://BUCKET/PREFIX URL. Glue takes it as the
	// location of new tables (optional: the database's location serves);
	// a REST catalog receives it unchanged (for example an S3 Tables ARN).
	Warehouse string `yaml:"warehouse"`
	// Properties are passed to the catalog unchanged, for settings this
	// struct does not name: for an S3 warehouse s3.region, s3.endpoint (an
	// S3-compatible store, addressed path-style), s3.access-key-id and
	// s3.secret-access-key (else the AWS credentials chain).
	Properties map[string]string `yaml:"properties,omitempty"`
	// MustExist refuses a sql catalog whose sqlite file, or a local
	// warehouse folder, does not exist, instead of creating an empty one:
	// a typo in a path would otherwise give a catalog without tables, and
	// every event would be dead-lettered as table_not_found. Every
	// command but demo and ingest sets it.
	MustExist bool `yaml:"-"`
}

// RowGroupBytes is the Parquet row group size of the tables the enricher
// creates (write.parquet.row-group-size-bytes).
const RowGroupBytes = 16 << 20

// RowGroupRows caps the rows of one Parquet row group of the tables the
// enricher creates (write.parquet.row-group-limit).
const RowGroupRows = 128 << 10

// ErrTableNotFound is returned (wrapped) for a table the catalog does not hold.
var ErrTableNotFound = errors.New("table not found")

// Catalog is the enricher's handle on an Iceberg catalog. It is safe for
// concurrent use.
type Catalog struct {
	cat catalog.Catalog
}

// Resolve makes relative paths in cfg relative to dir (the folder of the
// config file that named them).
func (cfg CatalogConfig) Resolve(dir string) CatalogConfig {
	if cfg.Type != CatalogSQL {
		return cfg // URLs, ARNs and endpoints: nothing is relative
	}
	abs := func(p string) string {
		if p == "" || strings.Contains(p, "://") || filepath.IsAbs(p) {
			return p
		}
		return filepath.Join(dir, p)
	}
	cfg.URI = abs(cfg.URI)
	cfg.Warehouse = abs(cfg.Warehouse)
	return cfg
}

// Validate reports the first field of cfg that cannot work.
func (cfg CatalogConfig) Validate() error {
	switch cfg.Type {
	case CatalogSQL:
		if cfg.URI == "" {
			return errors.New("catalog.uri: is required for a sql catalog (the sqlite file)")
		}
		if cfg.Warehouse == "" {
			return errors.New("catalog.warehouse: is required (a folder, file:// or s3:// URL for table files)")
		}
		if scheme, _, ok := strings.Cut(cfg.Warehouse, "://"); ok && scheme != "file" && scheme != "s3" {
			return fmt.Errorf("catalog.warehouse: %q: scheme %s is not supported (a folder, file:// or s3://)", cfg.Warehouse, scheme)
		}
	case CatalogGlue:
		if cfg.Warehouse != "" && !strings.HasPrefix(cfg.Warehouse, "s3://") {
			return fmt.Errorf("catalog.warehouse: %q: a glue catalog keeps tables on s3:// (or leave it empty for the database's location)", cfg.Warehouse)
		}
	case CatalogREST:
		if !strings.HasPrefix(cfg.URI, "http://") && !strings.HasPrefix(cfg.URI, "https://") {
			return fmt.Errorf("catalog.uri: %q: a rest catalog needs its http(s) endpoint", cfg.URI)
		}
	case "":
		return errors.New("catalog.type: is required (sql, glue or rest)")
	default:
		return fmt.Errorf("catalog.type: %q is not supported (sql, glue or rest)", cfg.Type)
	}
	return nil
}

// OpenCatalog opens the catalog cfg names. For a sql catalog the sqlite file
// is created when missing (unless cfg.MustExist), in WAL mode with a busy
// timeout so that several processes can share it.
func OpenCatalog(ctx context.Context, cfg CatalogConfig) (*Catalog, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.MustExist {
		if err := cfg.CheckExists(); err != nil {
			return nil, err
		}
	}
	name := cfg.Name
	if name == "" {
		name = "enricher"
	}
	props := iceberg.Properties{}
	for k, v := range cfg.Properties {
		props[k] = v
	}
	props["type"] = cfg.Type
	if warehouse := cfg.Warehouse; warehouse != "" {
		if cfg.Type == CatalogSQL && !strings.Contains(warehouse, "://") {
			warehouse = "file://" + filepath.ToSlash(warehouse)
		}
		props["warehouse"] = warehouse
	}
	if cfg.Type == CatalogREST {
		props["uri"] = cfg.URI
	}
	if cfg.Type == CatalogSQL {
		props[sqlcat.DriverKey] = sqliteshim.ShimName
		props[sqlcat.DialectKey] = string(sqlcat.SQLite)
		uri := strings.TrimPrefix(cfg.URI, "file://")
		props["uri"] = "file:" + uri + "?_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)"
	}
	cat, err := catalog.Load(ctx, name, props)
	if err != nil {
		return nil, fmt.Errorf("open %s catalog %s: %w", cfg.Type, cfg.URI, err)
	}
	return &Catalog{cat: cat}, nil
}

// CheckExists reports a local sqlite file or warehouse folder of cfg that
// does not exist (a typo in the config), or a sqlite file that is empty
// (sqlite would start a new catalog in it); remote catalogs are not
// checked.
func (cfg CatalogConfig) CheckExists() error {
	if cfg.Type != CatalogSQL {
		return nil // remote catalogs: the catalog itself answers
	}
	hint := "only `enricher demo` and `enricher ingest` create a catalog; check the path in the config"
	db := strings.TrimPrefix(cfg.URI, "file://")
	if st, err := os.Stat(db); err != nil {
		return fmt.Errorf("catalog.uri: the sqlite file %s: %w (%s)", db, err, hint)
	} else if !st.Mode().IsRegular() {
		return fmt.Errorf("catalog.uri: %s is not a file", db)
	} else if st.Size() == 0 {
		// sqlite would make it a new empty catalog. (A catalog has its
		// 4 KiB header from the moment it is opened, WAL mode or not.)
		return fmt.Errorf("catalog.uri: the sqlite file %s is empty, not a catalog (%s)", db, hint)
	}
	if wh, ok := strings.CutPrefix(cfg.Warehouse, "file://"); ok || !strings.Contains(cfg.Warehouse, "://") {
		if !ok {
			wh = cfg.Warehouse
		}
		if st, err := os.Stat(wh); err != nil {
			return fmt.Errorf("catalog.warehouse: the folder %s: %w (%s)", wh, err, hint)
		} else if !st.IsDir() {
			return fmt.Errorf("catalog.warehouse: %s is not a folder", wh)
		}
	}
	return nil
}

// Close releases the catalog's connections.
func (c *Catalog) Close() error {
	if cl, ok := c.cat.(catalog.Closer); ok {
		if err := cl.Close(); err != nil {
			return fmt.Errorf("close catalog: %w", err)
		}
	}
	return nil
}

// Ident parses "namespace.table" (the last dot separates the table).
func Ident(name string) (table.Identifier, error) {
	i := strings.LastIndexByte(name, '.')
	if i <= 0 || i == len(name)-1 {
		return nil, fmt.Errorf("table name %q: want NAMESPACE.TABLE", name)
	}
	return append(strings.Split(name[:i], "."), name[i+1:]), nil
}

// LoadTable loads a table by "namespace.table". A missing table (or
// namespace) is ErrTableNotFound.
func (c *Catalog) LoadTable(ctx context.Context, name string) (*table.Table, error) {
	id, err := Ident(name)
	if err != nil {
		return nil, err
	}
	tbl, err := c.cat.LoadTable(ctx, id)
	if errors.Is(err, catalog.ErrNoSuchTable) || errors.Is(err, catalog.ErrNoSuchNamespace) {
		return nil, fmt.Errorf("load table %s: %w", name, ErrTableNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("load table %s: %w", name, err)
	}
	return tbl, nil
}

// Tables lists the tables of a namespace as "namespace.table".
func (c *Catalog) Tables(ctx context.Context, namespace string) ([]string, error) {
	var out []string
	for id, err := range c.cat.ListTables(ctx, strings.Split(namespace, ".")) {
		if errors.Is(err, catalog.ErrNoSuchNamespace) {
			return nil, nil
		}
		if err != nil {
			return nil, fmt.Errorf("list tables of %s: %w", namespace, err)
		}
		out = append(out, strings.Join(id, "."))
	}
	return out, nil
}

// CreateTable creates a table (and its namespace when missing) with the
// columns of an Arrow schema; field ids are assigned fresh.
func (c *Catalog) CreateTable(ctx context.Context, name string, schema *arrow.Schema, props map[string]string) (*table.Table, error) {
	sc, err := table.ArrowSchemaToIcebergWithFreshIDs(schema, false)
	if err != nil {
		return nil, fmt.Errorf("create table %s: schema: %w", name, err)
	}
	return c.CreateIcebergTable(ctx, name, sc, props)
}

// CreateIcebergTable creates a table (and its namespace when missing).
func (c *Catalog) CreateIcebergTable(ctx context.Context, name string, sc *iceberg.Schema, props map[string]string) (*table.Table, error) {
	id, err := Ident(name)
	if err != nil {
		return nil, err
	}
	ns := catalog.NamespaceFromIdent(id)
	if err := c.cat.CreateNamespace(ctx, ns, nil); err != nil && !errors.Is(err, catalog.ErrNamespaceAlreadyExists) {
		return nil, fmt.Errorf("create namespace %s: %w", strings.Join(ns, "."), err)
	}
	p := iceberg.Properties{
		table.PropertyFormatVersion: "2",
		// Writers buffer a whole row group in memory and readers decode one
		// at a time: small row groups keep both bounded however large a
		// commit or a data file is.
		table.ParquetRowGroupSizeBytesKey: strconv.Itoa(RowGroupBytes),
		table.ParquetRowGroupLimitKey:     strconv.Itoa(RowGroupRows),
	}
	for k, v := range props {
		p[k] = v
	}
	tbl, err := c.cat.CreateTable(ctx, id, sc, catalog.WithProperties(p))
	if err != nil {
		return nil, fmt.Errorf("create table %s: %w", name, err)
	}
	return tbl, nil
}
