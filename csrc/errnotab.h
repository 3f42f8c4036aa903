/* errnotab.h: every errno name and number the platform's <errno.h> defines. Included as C and
 * read as the cffi cdef, so: declarations only, no include guards, no other preprocessor.
 * The definitions are generated at build time (csrc/gen_errno_table.py, run by build_ffi.py)
 * and compiled into the module: numbers come from the compiler, never from a written table. */

/* One errno name. alias is 1 when the header defines the name as another errno name
 * (EWOULDBLOCK as EAGAIN), 0 when it defines it as a number. */
struct pso_errno_entry {
    const char *name;
    int code;
    int alias;
};

/* pso_errno_count entries, sorted by name, then one with name NULL. */
extern const struct pso_errno_entry pso_errno_table[];
extern const int pso_errno_count;
