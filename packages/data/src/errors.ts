/** An error a user can meet, with a message that says what to do. */
export class DataError extends Error {
  /** Always `DataError`. */
  override name = 'DataError';
}
