/* An HDF5 filter plugin (id 32999) that passes data through unchanged and prints to
 * the C-level standard output each time it decodes a chunk, as the LZ4 plugin does on
 * damaged data. Built by tests/hostile_read/test_plugin_stdout.py; no HDF5 headers
 * needed: the plugin interface is declared here as HDF5 defines it. */
#include <stdio.h>
#include <stddef.h>
#include <stdint.h>

typedef int64_t hid_t;
typedef int herr_t;
typedef int htri_t;
typedef int H5Z_filter_t;

typedef struct {
    int version;
    H5Z_filter_t id;
    unsigned encoder_present;
    unsigned decoder_present;
    const char *name;
    htri_t (*can_apply)(hid_t, hid_t, hid_t);
    herr_t (*set_local)(hid_t, hid_t, hid_t);
    size_t (*filter)(unsigned int, size_t, const unsigned int[], size_t, size_t *, void **);
} H5Z_class2_t;

#define H5Z_FLAG_REVERSE 0x0100

static size_t noisy(unsigned int flags, size_t cd_nelmts, const unsigned int cd_values[],
                    size_t nbytes, size_t *buf_size, void **buf) {
    (void)cd_nelmts; (void)cd_values; (void)buf_size; (void)buf;
    if (flags & H5Z_FLAG_REVERSE) {
        printf("noisy filter: decompression failed, %zu bytes expected\n", nbytes);
        fflush(stdout);
    }
    return nbytes;
}

static const H5Z_class2_t NOISY = {1, 32999, 1, 1, "noisy", NULL, NULL, noisy};

int H5PLget_plugin_type(void) { return 0; /* H5PL_TYPE_FILTER */ }
const void *H5PLget_plugin_info(void) { return &NOISY; }
