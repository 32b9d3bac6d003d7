/* Keeps every library target non-empty while its module is being built up;
 * CMake refuses a library with no sources. */
typedef int kappa_empty_translation_unit;
